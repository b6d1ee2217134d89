"""Export a generator's whole N-step sampler as one ONNX or TorchScript graph.

Inputs of the exported graph: mel (B, n_mels, F) and noise (B, F * mel_hop), the scaled start
0.1 * randn; output audio (B, F * mel_hop) in [-1, 1]. Batch and frame axes are dynamic. Run an ONNX
file without torch: from flow2gan.onnx import OnnxVocoder; OnnxVocoder("model.onnx").infer(mel).
Example: flow2gan-export --hf-model-name libritts-mel-2-step --output model.onnx
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from flow2gan.bin.common import add_model_options, load_model
from flow2gan.cli import prog_name
from flow2gan.deploy import export_sampler
from flow2gan.runtime import setup_logging

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The export CLI's options."""
    parser = argparse.ArgumentParser(
        prog=prog_name("flow2gan.bin.export"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="graph format")
    parser.add_argument("--output", type=Path, required=True, help="file to write (parents are created)")
    parser.add_argument(
        "--verbose", action="store_true", help="show the exporter's progress and optimiser log"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Export; returns 0 (usage errors exit with 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    args.device = args.device or "cpu"
    model, n = load_model(parser, args)
    out = export_sampler(model, n, args.output, args.format, verbose=args.verbose)
    logger.info("wrote %s (%d-step sampler, %s)", out, n, args.format)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
