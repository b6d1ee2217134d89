"""Write a lhotse RecordingSet manifest (JSONL.gz) for every audio file under a directory.

``python -m flow2gan.bin.prepare_manifests --wav-dir DIR --out recordings.jsonl.gz`` — recording ids are the
file stems (made unique with the relative path when stems repeat); unreadable files are reported and skipped.
``--repeat N`` lists every recording N times (ids suffixed ``-rep{k}``) so that a tiny corpus gives training
epochs of a useful length (each visit draws its own random crop).

``--shar-dir DIR`` (with or instead of ``--out``) also writes the recordings as lhotse Shar shards for
``--train-shar DIR``: ``cuts.NNNNNN.jsonl.gz`` + ``recording.NNNNNN.tar`` with ``--shar-shard-size``
recordings each, the audio re-encoded as 16-bit FLAC (``--shar-format wav``: 16-bit WAV, larger but faster
to decode; both lossless for 16-bit sources), the recordings in a seeded random order so that every shard
is a sample of the corpus.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from lhotse import CutSet, Recording, RecordingSet
from lhotse.utils import fastcopy
from tqdm import tqdm

from flow2gan.cli import prog_name
from flow2gan.runtime import setup_logging

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus")


def scan_recordings(wav_dir: Path, suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> RecordingSet:
    """A RecordingSet of every readable audio file below ``wav_dir`` (sorted paths)."""
    paths = sorted(p for p in wav_dir.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    stems = [p.stem for p in paths]
    recordings = []
    for path in tqdm(paths, desc="scanning", unit="file"):
        rec_id = path.stem if stems.count(path.stem) == 1 else str(path.relative_to(wav_dir).with_suffix(""))
        try:
            recordings.append(Recording.from_file(path, recording_id=rec_id.replace("/", "_")))
        except Exception as exc:  # unreadable or corrupt files are skipped, not fatal
            logger.error("skipping %s: %s", path, exc)
    return RecordingSet.from_recordings(recordings)


def repeat_recordings(recordings: RecordingSet, times: int) -> RecordingSet:
    """Each recording ``times`` times under ids ``<id>-rep{k}`` (identity for times = 1)."""
    if times == 1:
        return recordings
    copies = [fastcopy(rec, id=f"{rec.id}-rep{k}") for k in range(times) for rec in recordings]
    return RecordingSet.from_recordings(copies)


def write_shar(
    recordings: RecordingSet, shar_dir: Path, shard_size: int, audio_format: str = "flac", seed: int = 0
) -> int:
    """Write ``recordings`` in a ``seed``-shuffled order as Shar shards; returns the number of shards.

    One cut per recording (same id) covering all of it; the shards hold the audio (``audio_format``).
    """
    shar_dir.mkdir(parents=True, exist_ok=True)
    shuffled = recordings.to_eager().shuffle(rng=random.Random(seed))
    cuts = CutSet.from_cuts(rec.to_cut() for rec in shuffled)
    paths = cuts.to_shar(shar_dir, fields={"recording": audio_format}, shard_size=shard_size)
    return len(paths["cuts"])


def main(argv: list[str] | None = None) -> int:
    """Scan ``--wav-dir``, write ``--out`` and/or ``--shar-dir``; exit code 1 if no audio file under it
    could be read, 2 (a usage error) for a missing folder or a bad value."""
    parser = argparse.ArgumentParser(
        prog=prog_name("flow2gan.bin.prepare_manifests"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--wav-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="output manifest, e.g. recordings.jsonl.gz")
    parser.add_argument("--repeat", type=int, default=1, help="list every recording this many times")
    parser.add_argument("--shar-dir", type=Path, help="also write lhotse Shar shards (audio included) here")
    parser.add_argument("--shar-shard-size", type=int, default=1000, help="recordings per Shar shard")
    parser.add_argument("--shar-format", choices=["flac", "wav"], default="flac", help="Shar audio encoding")
    args = parser.parse_args(argv)
    if args.out is None and args.shar_dir is None:
        parser.error("give --out and/or --shar-dir")
    if not args.wav_dir.is_dir():
        parser.error(
            f"--wav-dir {args.wav_dir} " + ("is not a folder" if args.wav_dir.exists() else "does not exist")
        )
    for flag, value in (("--repeat", args.repeat), ("--shar-shard-size", args.shar_shard_size)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    setup_logging()
    recordings = scan_recordings(args.wav_dir)
    if len(recordings) == 0:
        logger.error("no readable audio files under %s", args.wav_dir)
        return 1
    recordings = repeat_recordings(recordings, args.repeat)
    total = sum(r.duration for r in recordings)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        recordings.to_file(args.out)
        logger.info("wrote %d recordings (%.1f s) to %s", len(recordings), total, args.out)
    if args.shar_dir is not None:
        shards = write_shar(recordings, args.shar_dir, args.shar_shard_size, args.shar_format)
        logger.info(
            "wrote %d recordings (%.1f s) in %d Shar shards to %s",
            len(recordings),
            total,
            shards,
            args.shar_dir,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
