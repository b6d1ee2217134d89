"""LibriTTS data preparation (stage -1 of ``run_libritts.sh``).

Writes, under ``--manifest-dir``: ``recordings_{part}.jsonl.gz`` for every part found, the merged and
shuffled ``recordings_train-all-shuf.jsonl.gz`` / ``recordings_valid.jsonl.gz`` and
``recordings_test.jsonl.gz`` (only if absent, as the reference recipe does), and a fresh 10-file
``recordings_test_10.jsonl.gz`` for TensorBoard; under ``--wav-list-dir``: ``{part}.txt`` wav lists
(relative to the LibriTTS root) for the dev/test parts and the merged ``filelist_valid.txt`` /
``filelist_test.txt`` used by the metrics stage.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from lhotse import RecordingSet

from flow2gan.bin.prepare_manifests import scan_recordings
from flow2gan.cli import prog_name
from flow2gan.runtime import setup_logging

logger = logging.getLogger(__name__)

TRAIN_PARTS = ("train-clean-100", "train-clean-360", "train-other-500")
VALID_PARTS = ("dev-clean", "dev-other")
TEST_PARTS = ("test-clean", "test-other")


def merge(manifest_dir: Path, parts: tuple[str, ...], out_name: str, shuffle_seed: int | None) -> None:
    """Concatenate the parts' manifests (optionally shuffled) into ``out_name`` unless it exists."""
    out = manifest_dir / out_name
    if out.is_file():
        logger.info("%s exists, kept", out)
        return
    recordings = [
        rec for part in parts for rec in RecordingSet.from_file(manifest_dir / f"recordings_{part}.jsonl.gz")
    ]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(recordings)
    RecordingSet.from_recordings(recordings).to_file(out)
    logger.info("wrote %s (%d recordings)", out, len(recordings))


def write_wav_list(root: Path, part: str, out: Path) -> list[str]:
    """``part``'s wav paths relative to ``root``, one a line; returns them."""
    lines = sorted(str(p.relative_to(root)) for p in (root / part).rglob("*.wav"))
    out.write_text("".join(f"{line}\n" for line in lines))
    return lines


def main(argv: list[str] | None = None) -> int:
    """Prepare every manifest and list; exit code 1 with a clear message when the root is missing."""
    parser = argparse.ArgumentParser(
        prog=prog_name("flow2gan.bin.prepare_libritts"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root-dir", type=Path, default=Path("download/libritts/LibriTTS"))
    parser.add_argument("--manifest-dir", type=Path, default=Path("data/manifests/libritts"))
    parser.add_argument("--wav-list-dir", type=Path, default=Path("data/wav_list/libritts"))
    parser.add_argument("--seed", type=int, default=42, help="shuffling and the 10-file test subset")
    args = parser.parse_args(argv)
    setup_logging()
    root = args.root_dir
    parts = [p for p in (*TRAIN_PARTS, *VALID_PARTS, *TEST_PARTS) if (root / p).is_dir()]
    if not root.is_dir() or not parts:
        logger.error(
            "LibriTTS not found under %s (expected sub-folders such as %s); download it from "
            "https://www.openslr.org/60/ and pass --root-dir (run_libritts.sh: libritts_root=...)",
            root,
            ", ".join(TRAIN_PARTS[:1] + VALID_PARTS[:1]),
        )
        return 1
    missing = [p for p in (*TRAIN_PARTS, *VALID_PARTS, *TEST_PARTS) if p not in parts]
    if missing:
        logger.warning("LibriTTS parts not found (skipped): %s", ", ".join(missing))
    args.manifest_dir.mkdir(parents=True, exist_ok=True)
    args.wav_list_dir.mkdir(parents=True, exist_ok=True)
    for part in parts:
        out = args.manifest_dir / f"recordings_{part}.jsonl.gz"
        scan_recordings(root / part).to_file(out)
        logger.info("wrote %s", out)
    lists: dict[str, list[str]] = {}
    for part in (p for p in (*VALID_PARTS, *TEST_PARTS) if p in parts):
        lists[part] = write_wav_list(root, part, args.wav_list_dir / f"{part}.txt")
    groups = {"train-all-shuf": TRAIN_PARTS, "valid": VALID_PARTS, "test": TEST_PARTS}
    for name, group in groups.items():
        present = tuple(p for p in group if p in parts)
        if present:
            merge(
                args.manifest_dir,
                present,
                f"recordings_{name}.jsonl.gz",
                None if name == "test" else args.seed,
            )
    for name, group in (("valid", VALID_PARTS), ("test", TEST_PARTS)):
        lines = [line for part in group for line in lists.get(part, [])]
        if lines:
            (args.wav_list_dir / f"filelist_{name}.txt").write_text("".join(f"{line}\n" for line in lines))
    test_manifest = args.manifest_dir / "recordings_test.jsonl.gz"
    if test_manifest.is_file():
        test = list(RecordingSet.from_file(test_manifest))
        subset = random.Random().sample(test, min(10, len(test)))
        RecordingSet.from_recordings(subset).to_file(args.manifest_dir / "recordings_test_10.jsonl.gz")
    logger.info("LibriTTS preparation done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
