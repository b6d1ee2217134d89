"""Write a lhotse RecordingSet manifest (JSONL.gz) for every audio file under a directory.

``python -m flow2gan.bin.prepare_manifests --wav-dir DIR --out recordings.jsonl.gz`` — recording ids are the
file stems (made unique with the relative path when stems repeat); unreadable files are reported and skipped.
``--repeat N`` lists every recording N times (ids suffixed ``-rep{k}``) so that a tiny corpus gives training
epochs of a useful length (each visit draws its own random crop).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lhotse import Recording, RecordingSet
from lhotse.utils import fastcopy
from tqdm import tqdm

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


def main(argv: list[str] | None = None) -> int:
    """Scan ``--wav-dir`` and write ``--out``; exit code 1 when nothing usable was found."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wav-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output manifest, e.g. recordings.jsonl.gz")
    parser.add_argument("--repeat", type=int, default=1, help="list every recording this many times")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.wav_dir.is_dir():
        logger.error("--wav-dir %s is not a directory", args.wav_dir)
        return 1
    recordings = scan_recordings(args.wav_dir)
    if len(recordings) == 0:
        logger.error("no readable audio files under %s", args.wav_dir)
        return 1
    if args.repeat < 1:
        logger.error("--repeat must be >= 1")
        return 1
    recordings = repeat_recordings(recordings, args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    recordings.to_file(args.out)
    logger.info(
        "wrote %d recordings (%.1f s) to %s", len(recordings), sum(r.duration for r in recordings), args.out
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
