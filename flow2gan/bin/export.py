"""Export a generator's whole N-step sampler as one ONNX or TorchScript graph.

    python -m flow2gan.bin.export --hf-model-name libritts-mel-2-step --n-timesteps 2 --output model.onnx

Inputs of the exported graph: ``mel`` (B, n_mels, F) and ``noise`` (B, F * mel_hop), the scaled start
``0.1 * randn``; output ``audio`` (B, F * mel_hop) in [-1, 1]. Batch and frame axes are dynamic.
Run an ONNX file without torch with :class:`flow2gan.onnx.OnnxVocoder`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from flow2gan.cli import optional_str
from flow2gan.export import export_sampler
from flow2gan.pretrained import get_model, pretrained_info
from flow2gan.sampling import resolve_n_timesteps


def main(argv: list[str] | None = None) -> int:
    """Export; returns 0."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=optional_str, default=None)
    parser.add_argument("--hf-model-name", type=optional_str, default=None)
    parser.add_argument("--model-name", default=None, help="config name or JSON (default: the HF model's)")
    parser.add_argument("--n-timesteps", type=int, default=None, help="default: the checkpoint's own")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not args.checkpoint and not args.hf_model_name:
        parser.error("give --checkpoint or --hf-model-name")
    try:
        if args.hf_model_name and not args.checkpoint:
            released = pretrained_info(args.hf_model_name).n_timesteps
            resolve_n_timesteps(args.n_timesteps, released, "error", args.hf_model_name)
    except ValueError as exc:
        parser.error(str(exc))
    model, _ = get_model(args.model_name, args.hf_model_name, args.checkpoint)
    n = resolve_n_timesteps(args.n_timesteps, model.default_n_timesteps, "warn")
    out = export_sampler(model, n, args.output, args.format)
    logging.info("wrote %s (%d-step sampler, %s)", out, n, args.format)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
