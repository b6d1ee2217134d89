"""Stream a log-mel or an audio file's mel frame by frame into a wav: ``python -m flow2gan.bin.stream``.

A ``.pt`` input holds the condition tensor (a log-mel, or EnCodec codes for a token model); any other
file is read as audio and turned into the model's log-mel. The condition is pushed into a
:class:`flow2gan.streaming.StreamingVocoder` ``--frames-per-push`` frames at a time, as a TTS model
would produce it; the tool prints the look-ahead, the time to first audio and the real-time factor,
and writes the audio (16-bit PCM at the model rate). The output equals offline inference with the
stream's start noise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from flow2gan.audio import load_audio, save_audio
from flow2gan.cli import DefaultsHelpFormatter, optional_str, prog_name, str2bool
from flow2gan.models.token_generator import audio_front_end
from flow2gan.pretrained import get_model
from flow2gan.runtime import tune_malloc
from flow2gan.streaming import StreamingVocoder, stream_frames


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (model options as in ``infer_dir``)."""
    parser = argparse.ArgumentParser(
        prog=prog_name("flow2gan.bin.stream"),
        description="Stream a mel (.pt) or an audio file's mel frame by frame into a wav.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--input", type=Path, required=True, help="condition .pt (C, F) / (1, C, F) or audio")
    parser.add_argument("--output", type=Path, required=True, help="output .wav")
    parser.add_argument("--checkpoint", type=optional_str, default=None, help="local weights file")
    parser.add_argument("--hf-model-name", type=optional_str, default=None, help="released model name")
    parser.add_argument("--model-name", default=None, help="registered config or JSON path")
    parser.add_argument("--n-timesteps", type=int, default=None, help="Euler steps (default: the model's)")
    parser.add_argument("--chunk-size", type=int, default=16, help="mel frames vocoded per model call")
    parser.add_argument("--frames-per-push", type=int, default=1, help="mel frames per push")
    parser.add_argument("--seed", type=int, default=0, help="start-noise seed")
    parser.add_argument("--clamp-pred", type=str2bool, default=True, help="clamp the output to [-1, 1]")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device such as cpu or cuda:0 (default: cuda if available, else cpu)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.hf_model_name is None:
        parser.error("give --checkpoint <file> or --hf-model-name <released model>")
    tune_malloc()
    try:
        model, cfg = get_model(args.model_name, args.hf_model_name, args.checkpoint, device=args.device)
        stream = StreamingVocoder(model, args.n_timesteps, args.chunk_size, args.seed, args.clamp_pred)
        if args.input.suffix.lower() == ".pt":
            mel = torch.load(args.input, map_location="cpu", weights_only=True)
        else:
            mel = audio_front_end(model)(load_audio(args.input, cfg.sampling_rate))
        if not isinstance(mel, torch.Tensor) or (mel.dim() == 3 and mel.shape[0] != 1):
            raise ValueError(f"{args.input} must hold one condition tensor (C, F) or (1, C, F)")
        audio, timing = stream_frames(stream, mel.to(args.device), args.frames_per_push)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    save_audio(args.output, audio[0], cfg.sampling_rate)
    print(
        f"stream: {stream.n_timesteps}-step, chunk {stream.chunk_size} frames, look-ahead "
        f"{stream.lookahead_frames} frames ({stream.lookahead_ms:.0f} ms), "
        f"{args.frames_per_push} frame(s) per push\n"
        f"time to first audio {1000 * timing.time_to_first_audio_s:.0f} ms, "
        f"{timing.audio_s:.2f} s of audio in {timing.elapsed_s:.2f} s: "
        f"RTF {timing.rtf:.3f} (xRT {timing.xrt:.1f}) -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
