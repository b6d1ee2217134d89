"""Training-step speed and peak memory of the real stages on synthetic batches.

    python benchmarks/training_speed.py --stage pretrain --batch-size 256 --dtype fp32 --device cuda
    python benchmarks/training_speed.py --stage finetune --batch-size 64 --dtype fp16 --device cuda

A ``Trainer`` is built from the stage's own command-line parser (``flow2gan.bin.pretrain`` /
``finetune`` flags, so the recipe's optimizer, schedule, gradient scaler and GAN are what runs) and fed
random audio of ``--duration`` seconds (speed and memory do not depend on the signal). Stage 2 starts
generator updates at once (``--gen-start-batch-idx 0``), so its batches alternate D and G steps. After
``warmup`` steps, ``steps`` more are timed (CUDA synchronised) and the peak memory is read: CUDA's peak
allocation, or the process's peak RSS on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flow2gan.config import TokenGeneratorConfig, get_generator_config
from flow2gan.models.gan import GAN_CONFIGS
from flow2gan.training import distributed
from flow2gan.training.loop import Trainer
from flow2gan.training.options import (
    FlowMatchingOptions,
    GANOptions,
    TrainOptions,
    check_crop_length,
    check_device,
    common_options,
    finetune_parser,
    flow_matching_options,
    gan_options,
    pretrain_parser,
)
from flow2gan.training.stages import FlowMatchingStage, GANStage

STAGES = ("pretrain", "finetune")


def stage_options(
    stage: str,
    batch: int,
    dtype: str,
    device: str,
    model_name: str,
    gan_name: str,
    seconds: float,
    exp_dir: Path,
) -> tuple[TrainOptions, FlowMatchingOptions | GANOptions]:
    """The training CLI's options for ``stage`` with the given batch, autocast dtype and model."""
    flags = [
        "--exp-dir", str(exp_dir), "--train-recordings", "unused", "--valid-recordings", "unused",
        "--model-name", model_name, "--batch-size", str(batch), "--duration", str(seconds),
        "--tensorboard", "false", "--device", device, "--dtype", dtype,
    ]  # fmt: skip
    if stage == "pretrain":
        args = pretrain_parser().parse_args(flags)
        return common_options(args), flow_matching_options(args)
    args = finetune_parser().parse_args([*flags, "--gan-name", gan_name, "--gen-start-batch-idx", "0"])
    return common_options(args), gan_options(args)


def check_settings(stage: str, *args: Any) -> None:
    """``ValueError`` for settings :func:`measure` would fail on (``args`` as for :func:`stage_options`)."""
    opts, stage_opts = stage_options(stage, *args)
    try:
        config = get_generator_config(opts.model_name)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--model-name: {exc}") from exc
    if isinstance(config, TokenGeneratorConfig):
        raise ValueError(f"--model-name {opts.model_name}: this benchmark measures mel models only")
    check_crop_length(opts, stage_opts, config)
    check_device(opts.device)


def build_trainer(stage: str, *args: Any) -> Trainer:
    """A single-process Trainer for ``stage`` (``args`` as for :func:`stage_options`)."""
    opts, stage_opts = stage_options(stage, *args)
    if isinstance(stage_opts, FlowMatchingOptions):
        make_stage = lambda fresh: FlowMatchingStage(opts, stage_opts)  # noqa: E731
    else:
        make_stage = lambda fresh: GANStage(opts, stage_opts, initialise_generator=False)  # noqa: E731
    opts.exp_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(opts, distributed.setup(0, 1, opts.master_port, opts.device), make_stage)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA peak allocation since the last reset, or this process's peak RSS (Linux: KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def measure(
    stage: str,
    batch: int,
    dtype: str,
    device: str,
    model_name: str = "mel_24k_base",
    gan_name: str = "gan_multi_scale_mel_recon",
    seconds: float = 1.5,
    steps: int = 5,
    warmup: int = 2,
    exp_dir: Path = Path("exp/training_speed"),
) -> dict[str, Any]:
    """Steps/s (median of timed steps) and peak memory of ``stage`` at ``batch`` x ``seconds``."""
    torch.manual_seed(0)
    trainer = build_trainer(stage, batch, dtype, device, model_name, gan_name, seconds, exp_dir)
    dev = trainer.ctx.device
    n_samples = int(seconds * trainer.stage.generator.config.sampling_rate)
    audio = 0.1 * torch.randn(batch, n_samples, device=dev)
    lens = torch.full((batch,), n_samples, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for b in range(warmup + steps):
        sync()
        start = time.perf_counter()
        trainer.train_step(audio, lens, b)
        sync()
        if b >= warmup:
            times.append(time.perf_counter() - start)
    wall = statistics.median(times)
    return {
        "stage": stage,
        "dtype": dtype,
        "batch": batch,
        "batch_asked": batch,
        "seconds": seconds,
        "model_name": model_name,
        "gan_name": gan_name if stage == "finetune" else None,
        "times_s": times,
        "steps_per_s": 1.0 / wall,
        "audio_s_per_s": batch * seconds / wall,
        "peak_memory_mb": peak_memory_mb(dev),
        "memory_kind": "cuda_max_allocated" if dev.type == "cuda" else "process_peak_rss",
    }


def measure_with_fallback(stage: str, batch: int, dtype: str, device: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`measure`, halving the batch after each CUDA out-of-memory error; records the batch asked for."""
    asked = batch
    while True:
        try:
            row = measure(stage, batch, dtype, device, **kwargs)
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()
            continue
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        row["batch_asked"] = asked
        return row


def main(argv: list[str] | None = None) -> None:
    """Print one JSON result line per stage and dtype asked for."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", choices=STAGES, nargs="+", default=list(STAGES))
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), nargs="+", default=["fp32"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--model-name", default="mel_24k_base")
    parser.add_argument("--gan-name", default="gan_multi_scale_mel_recon", choices=sorted(GAN_CONFIGS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--exp-dir", type=Path, default=Path("exp/training_speed"))
    args = parser.parse_args(argv)
    for flag, value in (("--batch-size", args.batch_size), ("--steps", args.steps)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if not (math.isfinite(args.duration) and args.duration > 0):
        parser.error(f"--duration must be a finite number > 0, got {args.duration}")
    for stage in args.stage:
        for dtype in args.dtype:
            settings = (args.batch_size, dtype, args.device, args.model_name, args.gan_name, args.duration)
            try:
                check_settings(stage, *settings, args.exp_dir)
            except ValueError as e:
                parser.error(str(e))
    for stage in args.stage:
        for dtype in args.dtype:
            row = measure_with_fallback(
                stage,
                args.batch_size,
                dtype,
                args.device,
                model_name=args.model_name,
                gan_name=args.gan_name,
                seconds=args.duration,
                steps=args.steps,
                exp_dir=args.exp_dir / f"{stage}-{dtype}",
            )
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
