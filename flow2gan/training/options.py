"""Command-line options of the two training stages (reference flag names and defaults, SPEC §6.4)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flow2gan.bin.common import optional_str, str2bool


@dataclass(frozen=True)
class TrainOptions:
    """Options shared by pre-training and fine-tuning (what the shared loop needs)."""

    world_size: int
    master_port: int
    tensorboard: bool
    num_epochs: int
    start_epoch: int
    resume: str | None
    exp_dir: Path
    seed: int
    print_diagnostics: bool
    inf_check: bool
    save_every_n: int
    keep_last_k: int
    average_period: int
    use_fp16: bool
    dtype: str
    train_recordings: list[str]
    train_dls_weights: list[float] | None
    train_shar: list[str]
    valid_recordings: list[str]
    test_recordings: str | None
    max_load_times: int
    duration: float
    batch_size: int
    train_num_workers: int
    valid_num_workers: int
    model_name: str
    codec: str | None
    log_interval: int
    valid_interval: int
    device: str | None
    warmup_batches: float

    def to_checkpoint_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings) to store at the top level of a checkpoint."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class FlowMatchingOptions:
    """Stage-1 (flow-matching pre-training) options."""

    base_lr: float
    lr_batches: float
    save_infer_steps: tuple[int, ...]


@dataclass(frozen=True)
class GANOptions:
    """Stage-2 (GAN fine-tuning) options."""

    generator_model_path: str | None
    base_lr_gen: float
    base_lr_disc: float
    lr_batches_gen: float
    lr_batches_disc: float
    gan_name: str
    n_timesteps: int
    disc_loss_mp_scale: float
    disc_loss_mr_scale: float
    gen_loss_mp_scale: float
    gen_loss_mr_scale: float
    feat_map_loss_mp_scale: float
    feat_map_loss_mr_scale: float
    mel_recon_loss_scale: float
    gen_start_batch_idx: int


def _comma_list(value: str) -> list[str]:
    """Split a comma-separated list, dropping empty entries."""
    return [v for v in (part.strip() for part in value.split(",")) if v]


def _float_list(value: str | None) -> list[float] | None:
    """Comma-separated floats, or None."""
    return None if value is None else [float(v) for v in _comma_list(value)]


def add_common_arguments(
    parser: argparse.ArgumentParser,
    num_epochs: int,
    exp_dir: str,
    batch_size: int,
    valid_interval: int,
) -> None:
    """The flags both training stages share, with the stage's own defaults."""
    add = parser.add_argument
    add("--world-size", type=int, default=1, help="number of DDP processes (GPUs) to spawn")
    add("--master-port", type=int, default=12354, help="DDP master port (unless MASTER_PORT is set)")
    add("--tensorboard", type=str2bool, default=True, help="write TensorBoard logs")
    add("--num-epochs", type=int, default=num_epochs)
    add("--start-epoch", type=int, default=1, help="resume from exp-dir/epoch-{start-epoch - 1}.pt when > 1")
    add("--resume", type=optional_str, default=None, help="'auto': continue after the newest epoch-*.pt")
    add("--exp-dir", type=Path, default=Path(exp_dir))
    add("--seed", type=int, default=42)
    add("--print-diagnostics", type=str2bool, default=False, help="collect statistics for 5 batches, exit")
    add("--inf-check", type=str2bool, default=False, help="name the first module with non-finite values")
    add("--save-every-n", type=int, default=1, help="save a checkpoint every n epochs (and the last)")
    add("--keep-last-k", type=int, default=21, help="keep the newest k epoch-*.pt files (0: all)")
    add("--average-period", type=int, default=200, help="update the running model average every n batches")
    add("--use-fp16", type=str2bool, default=False, help="fp16 autocast with a gradient scaler")
    add(
        "--dtype",
        choices=["fp32", "fp16", "bf16"],
        default=None,
        help="autocast dtype (overrides --use-fp16)",
    )
    add("--train-recordings", type=str, default="", help="comma-separated RecordingSet manifests")
    add(
        "--train-shar",
        type=str,
        default="",
        help="comma-separated lhotse Shar directories (flow2gan-prepare-manifests --shar-dir), read "
        "sequentially; their loaders come after the manifests' in --train-dls-weights",
    )
    add("--train-dls-weights", type=optional_str, default=None, help="comma-separated loader draw weights")
    add("--valid-recordings", type=str, required=True, help="comma-separated RecordingSet manifests")
    add(
        "--test-recordings", type=optional_str, default=None, help="small manifest synthesised to TensorBoard"
    )
    add("--max-load-times", type=int, default=3, help="random crop tries to avoid silence")
    add("--duration", type=float, default=1.5, help="training/validation crop length in seconds")
    add("--batch-size", type=int, default=batch_size, help="per process; also the validation batch size")
    add("--train-num-workers", type=int, default=4)
    add("--valid-num-workers", type=int, default=1)
    add("--model-name", type=str, default="mel_24k_base", help="registered config name or JSON config path")
    add(
        "--codec",
        type=optional_str,
        default=None,
        help="token models (encodec_24k_*): EnCodec hub name (facebook/encodec_24khz) or local folder",
    )
    add("--log-interval", type=int, default=50, help="text and TensorBoard log every n batches")
    add("--valid-interval", type=int, default=valid_interval, help="validate every n batches (and at 0)")
    add("--device", type=optional_str, default=None, help="cpu, cuda (default: cuda when available)")
    add("--warmup-batches", type=float, default=500.0, help="Eden2 LR warm-up length (0.1x -> 1x base LR)")


def common_options(args: argparse.Namespace) -> TrainOptions:
    """The shared options from parsed arguments (validated)."""
    dtype = args.dtype or ("fp16" if args.use_fp16 else "fp32")
    if args.resume not in (None, "auto"):
        raise SystemExit(f"--resume takes 'auto' or nothing, got {args.resume!r}")
    for name in (
        "num_epochs",
        "batch_size",
        "save_every_n",
        "average_period",
        "log_interval",
        "valid_interval",
    ):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    train_recordings, train_shar = _comma_list(args.train_recordings), _comma_list(args.train_shar)
    if not train_recordings and not train_shar:
        raise SystemExit("training data needed: --train-recordings and/or --train-shar")
    return TrainOptions(
        world_size=args.world_size,
        master_port=args.master_port,
        tensorboard=args.tensorboard,
        num_epochs=args.num_epochs,
        start_epoch=args.start_epoch,
        resume=args.resume,
        exp_dir=Path(args.exp_dir),
        seed=args.seed,
        print_diagnostics=args.print_diagnostics,
        inf_check=args.inf_check,
        save_every_n=args.save_every_n,
        keep_last_k=args.keep_last_k,
        average_period=args.average_period,
        use_fp16=dtype == "fp16",
        dtype=dtype,
        train_recordings=train_recordings,
        train_dls_weights=_float_list(args.train_dls_weights),
        train_shar=train_shar,
        valid_recordings=_comma_list(args.valid_recordings),
        test_recordings=args.test_recordings,
        max_load_times=args.max_load_times,
        duration=args.duration,
        batch_size=args.batch_size,
        train_num_workers=args.train_num_workers,
        valid_num_workers=args.valid_num_workers,
        model_name=args.model_name,
        codec=args.codec,
        log_interval=args.log_interval,
        valid_interval=args.valid_interval,
        device=args.device,
        warmup_batches=args.warmup_batches,
    )


def pretrain_parser() -> argparse.ArgumentParser:
    """Argument parser of ``flow2gan.bin.pretrain``."""
    parser = argparse.ArgumentParser(
        description="Stage 1: flow-matching pre-training of the Flow2GAN generator.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(
        parser, num_epochs=200, exp_dir="./exp-pretrain", batch_size=256, valid_interval=2000
    )
    parser.add_argument("--base-lr", type=float, default=0.035)
    parser.add_argument("--lr-batches", type=float, default=7500)
    parser.add_argument(
        "--save-infer-steps", type=str, default="2,4,8", help="steps of the TensorBoard samples"
    )
    return parser


def finetune_parser() -> argparse.ArgumentParser:
    """Argument parser of ``flow2gan.bin.finetune``."""
    parser = argparse.ArgumentParser(
        description="Stage 2: GAN fine-tuning of the N-step Flow2GAN generator.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser, num_epochs=20, exp_dir="./exp-finetune", batch_size=64, valid_interval=1000)
    add = parser.add_argument
    add("--generator-model-path", type=optional_str, default=None, help="stage-1 averaged generator file")
    add("--base-lr-gen", type=float, default=0.002, help="about 0.02 without a pre-trained generator")
    add("--base-lr-disc", type=float, default=0.02)
    add("--lr-batches-gen", type=float, default=20000, help="about 5000 without a pre-trained generator")
    add("--lr-batches-disc", type=float, default=5000)
    add("--gan-name", type=str, default="gan_multi_scale_mel_recon")
    add("--n-timesteps", type=int, default=1, help="Euler steps of the generator being fine-tuned")
    add("--disc-loss-mp-scale", type=float, default=1.0)
    add("--disc-loss-mr-scale", type=float, default=0.1)
    add("--gen-loss-mp-scale", type=float, default=1.0)
    add("--gen-loss-mr-scale", type=float, default=0.1)
    add("--feat-map-loss-mp-scale", type=float, default=1.0)
    add("--feat-map-loss-mr-scale", type=float, default=0.1)
    add("--mel-recon-loss-scale", type=float, default=45.0)
    add(
        "--gen-start-batch-idx",
        type=int,
        default=1000,
        help="discriminator-only batches before G/D alternation",
    )
    return parser


def flow_matching_options(args: argparse.Namespace) -> FlowMatchingOptions:
    """Stage-1 options from parsed arguments."""
    return FlowMatchingOptions(
        base_lr=args.base_lr,
        lr_batches=float(args.lr_batches),
        save_infer_steps=tuple(int(v) for v in _comma_list(args.save_infer_steps)),
    )


def gan_options(args: argparse.Namespace) -> GANOptions:
    """Stage-2 options from parsed arguments."""
    if args.n_timesteps < 1:
        raise SystemExit("--n-timesteps must be >= 1")
    names = [f.name for f in dataclasses.fields(GANOptions)]
    values = {name: getattr(args, name) for name in names}
    for name in ("lr_batches_gen", "lr_batches_disc"):
        values[name] = float(values[name])
    return GANOptions(**values)
