"""Vocode every audio file or log-mel (.pt tensor, .npy array) of a folder into 16-bit WAVs at the model rate.

Audio inputs (.wav .flac .mp3 .ogg) are downmixed, resampled and turned into the model's log-mel; .pt
and .npy files hold a log-mel (1, n_mels, frames) or (n_mels, frames). Each input becomes <output-dir>/<same
relative name>.wav, written atomically; existing outputs are skipped unless --overwrite, so an
interrupted run resumes. Every file's start noise depends only on --seed and its relative path.
--batch-size > 1 pads inputs of similar length into batches (an item shorter than its batch's longest
then comes out slightly different near its end); the default 1 gives exact single-file output.
Bad inputs are reported by name and skipped; the exit code is then 1. Token models (encodec_24k_*):
audio is encoded by the EnCodec of --codec at --bandwidth and resynthesised; .pt/.npy files then hold codes.
Library API: flow2gan.vocode.vocode_dir.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from flow2gan.bin.common import add_model_options, load_model
from flow2gan.cli import optional_str, prog_name, str2bool
from flow2gan.codec import EncodecTokenizer
from flow2gan.compat import add_input_type_option
from flow2gan.runtime import setup_logging, tune_malloc
from flow2gan.vocode import VocodeOptions, check_dirs, nothing_to_vocode, vocode_dir

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (reference names, plus batching, resume and seed options)."""
    parser = argparse.ArgumentParser(
        prog=prog_name("flow2gan.bin.infer_dir"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add = parser.add_argument
    add("--input-dir", type=Path, required=True, help="folder of audio files and/or log-mel .pt/.npy files")
    add("--output-dir", type=Path, required=True, help="where the .wav outputs go (created if needed)")
    add(
        "--chunk-size",
        type=int,
        default=-1,
        help="vocode N mel frames at a time with exact context; <= 0: whole files",
    )
    add(
        "--batch-size",
        type=int,
        default=1,
        help="> 1: padded batches of similar-length inputs (default: exact)",
    )
    add_input_type_option(parser)
    flag = {"type": str2bool, "nargs": "?", "const": True, "default": False}
    add("--recursive", **flag, help="also read sub-folders (mirrored in the output)")
    add("--overwrite", **flag, help="rewrite outputs that already exist")
    add("--seed", type=int, default=0, help="start-noise seed, combined with each file's relative path")
    add("--codec", type=optional_str, default=None, help="token models: EnCodec hub name or local folder")
    add("--bandwidth", type=float, default=None, help="token models: EnCodec kbps (audio inputs: default 6)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (1 if any input failed or there was nothing to vocode)."""
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_dirs(args.input_dir, args.output_dir)
        options = VocodeOptions(
            chunk_size=args.chunk_size,
            batch_size=args.batch_size,
            seed=args.seed,
            recursive=args.recursive,
            overwrite=args.overwrite,
            bandwidth=args.bandwidth,
        )
    except ValueError as exc:
        parser.error(str(exc))
    tune_malloc()
    model, n_timesteps = load_model(parser, args)
    device = str(next(model.parameters()).device)
    options = replace(options, n_timesteps=n_timesteps, device=device)
    try:
        codec = EncodecTokenizer(args.codec) if args.codec else None
        summary = vocode_dir(model, args.input_dir, args.output_dir, options, codec=codec)
    except (ValueError, ImportError, OSError) as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print("infer_dir: interrupted; every file written is complete, rerun to continue", file=sys.stderr)
        return 130
    print(
        f"infer_dir: {summary.written} written, {summary.skipped} skipped, {len(summary.failed)} failed "
        f"-> {args.output_dir}"
    )
    for name, reason in summary.failed:
        print(f"  failed {name}: {reason}")
    if not (summary.written or summary.skipped or summary.failed):
        print(f"infer_dir: {nothing_to_vocode(args.input_dir, args.recursive)}", file=sys.stderr)
        return 1
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
