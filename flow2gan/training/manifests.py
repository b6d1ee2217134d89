"""RecordingSet manifests (SPEC §5.4): reading them with the training duration filter, and checking one
before any work (readable, long enough, its audio found)."""

from __future__ import annotations

import logging
from pathlib import Path

from lhotse import Recording, RecordingSet

from flow2gan.audio import not_a_file

logger = logging.getLogger(__name__)

MIN_DURATION = 0.1  # seconds: training and validation drop recordings this short or shorter


def check_manifest(path: str | Path, min_duration: float | None = None) -> None:
    """``ValueError`` unless ``path`` is a RecordingSet manifest listing a recording > ``min_duration`` s
    whose audio can be read.

    Reads lazily up to the first such recording (usually the first line; ``None``: any recording) and
    the first 10 ms of its audio, so an empty, corrupt or wrong-kind file, one whose recordings the
    training duration filter would all drop, or one whose audio paths do not resolve from here (e.g.
    relative paths written from another folder) fails before any work.
    """
    count, first = 0, None
    try:
        recordings = RecordingSet.from_file(path)
        for rec in recordings if recordings is not None else ():
            if not isinstance(rec, Recording):
                break
            count += 1
            if min_duration is None or rec.duration > min_duration:
                first = rec
                break
    except Exception as exc:  # lhotse/gzip/json raise many kinds; all mean "not a manifest"
        raise ValueError(f"'{path}' is not a readable RecordingSet manifest ({exc})") from exc
    if first is not None:
        check_recording_audio(path, first)
        return
    if count == 0:
        raise ValueError(f"'{path}' is empty or not a RecordingSet manifest")
    raise ValueError(
        f"'{path}' has no recording longer than {min_duration} s, the shortest training keeps "
        f"({count} read, none longer)"
    )


def check_recording_audio(path: str | Path, rec: Recording) -> None:
    """``ValueError`` naming manifest ``path``, ``rec`` and its file unless the first 10 ms of its audio
    read. A missing relative path is named with the folder it was read from (the current one)."""
    files = [Path(s.source) for s in rec.sources if s.type == "file"]
    for file in files:
        if not file.is_file():
            raise ValueError(f"'{path}': the audio file '{file}' of recording {rec.id!r} {not_a_file(file)}")
    try:
        rec.load_audio(duration=min(0.01, rec.duration))
    except Exception as exc:  # unknown format, failing command, bad URL: all unreadable audio
        # lhotse's message lists each backend's error, then a hint and the call; keep the errors
        lines = [x for x in str(exc).splitlines() if x.strip() and not x.startswith(("Set LHOTSE", "[extra"))]
        reason = " ".join(lines) or type(exc).__name__
        named = f" ('{files[0]}')" if files else ""
        raise ValueError(f"'{path}': cannot read the audio of recording {rec.id!r}{named}: {reason}") from exc


def load_recordings(path: str, min_duration: float | None = MIN_DURATION) -> RecordingSet:
    """Eagerly load a RecordingSet manifest, dropping recordings ≤ ``min_duration`` s (None: keep all).

    ``ValueError`` for an empty file (lhotse reads it as nothing).
    """
    recordings = RecordingSet.from_file(path)
    if recordings is None:
        raise ValueError(f"manifest {path} is empty")
    recordings = recordings.to_eager()
    if min_duration is None:
        return recordings
    kept = [rec for rec in recordings if rec.duration > min_duration]
    dropped = len(recordings) - len(kept)
    if dropped:
        logger.info("%s: dropped %d recordings of duration <= %.3f s", path, dropped, min_duration)
    return RecordingSet.from_recordings(kept)
