"""Options of the two training stages: frozen dataclasses that also define the command-line flags.

Every field is one flag of ``flow2gan.bin.pretrain`` / ``flow2gan.bin.finetune`` with the reference's
name and default (see :mod:`flow2gan.cli` for how flags are generated). ``TrainOptions`` defaults are
pre-training's; fine-tuning overrides four of them (``FINETUNE_DEFAULTS``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from flow2gan.cli import (
    DefaultsHelpFormatter,
    add_dataclass_arguments,
    check_bounds,
    dataclass_from_args,
    prog_name,
)
from flow2gan.config import GeneratorConfig, TokenGeneratorConfig, get_generator_config
from flow2gan.models.discriminators import MRD_RESOLUTIONS
from flow2gan.models.gan import GAN_CONFIGS, GANLossScales
from flow2gan.training.condition import check_codec
from flow2gan.training.data import check_loader_weights
from flow2gan.training.experiment import ResumePoint, read_resume_checkpoint, resume_points
from flow2gan.training.manifests import MIN_DURATION, check_manifest
from flow2gan.weights import read_checkpoint

T = TypeVar("T")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A field with a default and the flag's help text (plus bounds, ``choices`` or ``required``)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class TrainOptions:
    """Options shared by pre-training and fine-tuning (what the shared loop needs).

    ``dtype`` None means "from ``use_fp16``"; after construction ``dtype`` is set and ``use_fp16`` equals
    ``dtype == "fp16"``. Raises ``ValueError`` for values out of range or missing data.
    """

    world_size: int = _opt(1, "number of DDP processes (GPUs) to spawn (torchrun sets its own)", min=1)
    master_port: int = _opt(12354, "DDP master port (unless MASTER_PORT is set)", min=1, max=65535)
    tensorboard: bool = _opt(True, "write TensorBoard logs to exp-dir/tensorboard")
    num_epochs: int = _opt(200, "number of epochs to train (the last one included)", min=1)
    start_epoch: int = _opt(1, "resume from exp-dir/epoch-{start-epoch - 1}.pt when > 1", min=1)
    resume: str | None = _opt(
        None,
        "'auto': continue from the newest usable checkpoint in exp-dir (epoch-end or mid-epoch); "
        "without --start-epoch",
    )
    exp_dir: Path = _opt(Path("./exp-pretrain"), "experiment directory: checkpoints, logs, TensorBoard")
    seed: int = _opt(42, "random seed (re-seeded per epoch as seed + epoch - 1)")
    print_diagnostics: bool = _opt(False, "collect module/gradient statistics for 5 batches, print, exit")
    inf_check: bool = _opt(False, "warn naming the first module with non-finite outputs or gradients")
    save_every_n: int = _opt(1, "save a checkpoint every n epochs (and after the last)", min=1)
    keep_last_k: int = _opt(
        21,
        "keep the newest k epoch-*.pt files, and apart the newest k mid-epoch ones (21: enough for "
        "save_averaged_model --avg 20; 0: all)",
        min=0,
    )
    save_every_n_batches: int = _opt(
        0, "also save epoch-{e}-batch-{k}.pt every n batches for an exact mid-epoch resume (0: off)", min=0
    )
    average_period: int = _opt(200, "update the running model average every n batches", min=1)
    use_fp16: bool = _opt(False, "fp16 autocast with a gradient scaler")
    dtype: str | None = _opt(
        None, "autocast dtype (overrides --use-fp16; default fp32)", choices=["fp32", "fp16", "bf16"]
    )
    train_recordings: tuple[str, ...] = _opt((), "comma-separated lhotse RecordingSet manifests")
    train_shar: tuple[str, ...] = _opt(
        (),
        "comma-separated lhotse Shar directories (flow2gan-prepare-manifests --shar-dir), read "
        "sequentially; their loaders come after the manifests' in --train-dls-weights",
    )
    train_dls_weights: tuple[float, ...] | None = _opt(
        None, "comma-separated draw weights of the training loaders (default: equal)"
    )
    valid_recordings: tuple[str, ...] = _opt(
        (), "comma-separated lhotse RecordingSet manifests for validation", required=True
    )
    test_recordings: str | None = _opt(None, "small manifest synthesised to TensorBoard at validation")
    max_load_times: int = _opt(3, "random crop tries to avoid silence", min=1)
    duration: float = _opt(1.5, "training/validation crop length in seconds", above=0)
    batch_size: int = _opt(256, "batch size per process (also for validation)", min=1)
    train_num_workers: int = _opt(4, "DataLoader workers per training loader", min=0)
    valid_num_workers: int = _opt(1, "DataLoader workers per validation loader", min=0)
    model_name: str = _opt("mel_24k_base", "generator config: a registered name or a JSON config path")
    codec: str | None = _opt(
        None, "token models (encodec_24k_*): EnCodec hub name (facebook/encodec_24khz) or local folder"
    )
    log_interval: int = _opt(50, "text and TensorBoard log every n batches", min=1)
    valid_interval: int = _opt(2000, "validate every n batches (and at batch 0)", min=1)
    device: str | None = _opt(None, "cpu, cuda or cuda:N (default: cuda when available)")
    warmup_batches: float = _opt(500.0, "Eden2 LR warm-up length in batches (0.1x -> 1x base LR)", min=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exp_dir", Path(self.exp_dir))
        dtype = self.dtype or ("fp16" if self.use_fp16 else "fp32")
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "use_fp16", dtype == "fp16")
        check_bounds(self)
        if self.resume not in (None, "auto"):
            raise ValueError(f"--resume takes 'auto' or nothing, got {self.resume!r}")
        if not self.train_recordings and not self.train_shar:
            raise ValueError("training data needed: --train-recordings and/or --train-shar")
        if not self.valid_recordings:
            raise ValueError("validation data needed: --valid-recordings")
        weights = self.train_dls_weights
        valid = weights is None or (all(math.isfinite(w) and w >= 0 for w in weights) and sum(weights) > 0)
        if not valid:
            raise ValueError(f"--train-dls-weights must be finite, >= 0 and not all 0, got {weights}")

    def to_checkpoint_dict(self) -> dict[str, Any]:
        """Plain values (paths as strings, lists for tuples) to store at the top level of a checkpoint."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {
            k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in plain.items()
        }


@dataclass(frozen=True)
class FlowMatchingOptions:
    """Stage-1 (flow-matching pre-training) options."""

    base_lr: float = _opt(0.035, "peak learning rate of ScaledAdam", above=0)
    lr_batches: float = _opt(7500.0, "Eden2 decay constant in batches", above=0)
    save_infer_steps: tuple[int, ...] = _opt((2, 4, 8), "Euler step counts of the TensorBoard test samples")

    def __post_init__(self) -> None:
        check_bounds(self)
        if any(n < 1 for n in self.save_infer_steps):
            raise ValueError(f"--save-infer-steps takes Euler step counts >= 1, got {self.save_infer_steps}")


@dataclass(frozen=True)
class GANOptions:
    """Stage-2 (GAN fine-tuning) options; the loss weights are :class:`GANLossScales`' fields."""

    generator_model_path: str | None = _opt(None, "stage-1 averaged generator file to start from")
    base_lr_gen: float = _opt(
        0.002, "generator peak LR (about 0.02 without a pre-trained generator)", above=0
    )
    base_lr_disc: float = _opt(0.02, "discriminator peak LR", above=0)
    lr_batches_gen: float = _opt(
        20000.0, "generator Eden2 decay constant (about 5000 without a pre-trained generator)", above=0
    )
    lr_batches_disc: float = _opt(5000.0, "discriminator Eden2 decay constant", above=0)
    gan_name: str = _opt(
        "gan_multi_scale_mel_recon",
        "GAN config: discriminators and mel-loss scales",
        choices=sorted(GAN_CONFIGS),
    )
    n_timesteps: int = _opt(1, "Euler steps of the generator being fine-tuned", min=1)
    loss_scales: GANLossScales = field(default_factory=GANLossScales)
    gen_start_batch_idx: int = _opt(1000, "discriminator-only batches before the G/D alternation", min=0)
    mel_only_batches: int = _opt(
        0,
        "first batches train the generator on the reconstruction losses alone (mel, plus phase / STFT "
        "when scaled), without any discriminator work (a flow2gan option for CPU budgets; 0 = the "
        "paper's schedule)",
        min=0,
    )

    def __post_init__(self) -> None:
        check_bounds(self)


FINETUNE_DEFAULTS = {"num_epochs": 20, "exp_dir": "./exp-finetune", "batch_size": 64, "valid_interval": 1000}


def _parser(module: str, description: str, defaults: dict[str, Any], stage: type) -> argparse.ArgumentParser:
    """Shared flags with the stage's defaults, then the stage's own flags."""
    parser = argparse.ArgumentParser(
        prog=prog_name(module), description=description, formatter_class=DefaultsHelpFormatter
    )
    add_dataclass_arguments(parser, TrainOptions, defaults)
    add_dataclass_arguments(parser, stage)
    return parser


def pretrain_parser() -> argparse.ArgumentParser:
    """Argument parser of ``flow2gan.bin.pretrain``."""
    return _parser(
        "flow2gan.bin.pretrain",
        "Stage 1: flow-matching pre-training of the Flow2GAN generator.",
        {},
        FlowMatchingOptions,
    )


def finetune_parser() -> argparse.ArgumentParser:
    """Argument parser of ``flow2gan.bin.finetune``."""
    return _parser(
        "flow2gan.bin.finetune",
        "Stage 2: GAN fine-tuning of the N-step Flow2GAN generator.",
        FINETUNE_DEFAULTS,
        GANOptions,
    )


def parse_options(
    parser: argparse.ArgumentParser, argv: list[str] | None, stage_options: Callable[[argparse.Namespace], T]
) -> tuple[TrainOptions, T]:
    """``argv`` -> (shared options, the stage's options); an invalid value is a usage error of ``parser``.

    Exits with status 2, the usage line and the message naming the flag, as argparse does for a value
    of the wrong type.
    """
    args = parser.parse_args(argv)
    try:
        opts, stage = common_options(args), stage_options(args)
        check_inputs(opts, stage)
    except ValueError as exc:
        parser.error(str(exc))
    return opts, stage


def check_inputs(opts: TrainOptions, stage: object) -> None:
    """Check what the options name before any work: input files and folders, the resume point, the config.

    Also the codec pairing, the crop length against the stage's STFTs, the count of
    ``--train-dls-weights``, ``--device`` and, last, the manifests' first records.
    ``--generator-model-path`` is checked only when the run will start fresh (no checkpoint to resume
    from), the only time it is read. Raises ``ValueError`` naming the flag.
    """
    if any(p.exists() and not p.is_dir() for p in (opts.exp_dir, *opts.exp_dir.parents)):
        raise ValueError(f"--exp-dir: '{opts.exp_dir}' is not a folder or is inside a file")
    if opts.resume == "auto" and opts.start_epoch > 1:
        raise ValueError("--resume auto picks the newest checkpoint itself: leave out --start-epoch")
    gan = isinstance(stage, GANOptions)
    try:
        points = resume_points(opts.exp_dir, opts.resume, opts.start_epoch)
        if opts.resume != "auto":
            for point in points:
                read_resume_checkpoint(point, gan, mmap=True)
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"--start-epoch: {exc}") from exc
    if opts.resume == "auto" and points:  # it skips unusable files, but one must be usable
        check_any_resumable(points, gan)
    fresh_start = not points
    files = {
        "--train-recordings": opts.train_recordings,
        "--valid-recordings": opts.valid_recordings,
        "--test-recordings": (opts.test_recordings,) if opts.test_recordings else (),
    }
    if isinstance(stage, GANOptions) and stage.generator_model_path and fresh_start:
        files["--generator-model-path"] = (stage.generator_model_path,)
    for flag, paths in files.items():
        for path in map(Path, paths):
            if not path.is_file():
                raise ValueError(
                    f"{flag}: '{path}' " + ("is not a file" if path.exists() else "does not exist")
                )
    if "--generator-model-path" in files:
        try:
            read_checkpoint(stage.generator_model_path, mmap=True)  # as the stage reads it, without tensors
        except ValueError as exc:
            raise ValueError(f"--generator-model-path: {exc}") from exc
    for path in map(Path, opts.train_shar):
        if not path.is_dir():
            raise ValueError(
                f"--train-shar: '{path}' " + ("is not a folder" if path.exists() else "does not exist")
            )
    try:
        config = get_generator_config(opts.model_name)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--model-name: {exc}") from exc
    check_codec(config, opts.codec)
    check_crop_length(opts, stage, config)
    try:
        check_loader_weights(opts.train_dls_weights, len(opts.train_recordings) + len(opts.train_shar))
    except ValueError as exc:
        raise ValueError(f"--train-dls-weights: {exc}") from exc
    if opts.device is not None:
        check_device(opts.device)
    for flag, min_duration in (
        ("--train-recordings", MIN_DURATION),
        ("--valid-recordings", MIN_DURATION),
        ("--test-recordings", None),
    ):
        for path in files[flag]:
            try:
                check_manifest(path, min_duration)
            except ValueError as exc:
                raise ValueError(f"{flag}: {exc}") from exc


def check_any_resumable(points: list[ResumePoint], gan: bool) -> None:
    """``ValueError`` naming ``--resume auto`` when none of ``points`` can be resumed from, with each
    file's reason (training would otherwise stop after building the model)."""
    reasons = []
    for point in points:
        try:
            read_resume_checkpoint(point, gan, mmap=True)
            return
        except (FileNotFoundError, ValueError) as exc:
            reasons.append(str(exc))
    raise ValueError(
        f"--resume auto: none of the {len(points)} checkpoint(s) can be resumed from: {'; '.join(reasons)}"
        " (move them away to start afresh)"
    )


def check_device(value: str) -> None:
    """``ValueError`` naming ``--device`` for a device torch cannot parse, or CUDA where there is none."""
    try:
        device = torch.device(value)
    except RuntimeError as exc:
        raise ValueError(f"--device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {value}: CUDA is not available here")


def check_crop_length(opts: TrainOptions, stage: object, config: GeneratorConfig) -> None:
    """``ValueError`` when a ``--duration`` crop is too short for a front-end or loss of the stage.

    Every centred STFT of the stage (the mel front-end of a mel model, the flow-matching loss in stage
    1, the mel reconstruction loss, the MRD and the enabled flow2gan losses in stage 2) needs more
    than ``n_fft // 2`` samples; the message names the longest one and the flag that sets it.
    """
    bounds: dict[str, int] = {}
    if not isinstance(config, TokenGeneratorConfig):
        bounds[f"the mel front-end's {config.mel_n_fft}-sample STFT (--model-name)"] = config.mel_n_fft // 2
    if isinstance(stage, FlowMatchingOptions):
        bounds[f"the flow-matching loss's {config.loss_n_fft}-sample STFT (--model-name)"] = (
            config.loss_n_fft // 2
        )
    if isinstance(stage, GANOptions):
        n_fft = max(GAN_CONFIGS[stage.gan_name].mel_recon_n_ffts)
        bounds[f"the mel reconstruction loss's {n_fft}-sample STFT (--gan-name)"] = n_fft // 2
        if stage.loss_scales.trains("mr"):
            bounds[f"the MRD's {max(MRD_RESOLUTIONS)}-sample STFT"] = max(MRD_RESOLUTIONS) // 2
        bounds.update(stage.loss_scales.crop_bounds(config.sampling_rate))
    crop = round(opts.duration * config.sampling_rate)
    what, bound = max(bounds.items(), key=lambda item: item[1])
    if crop <= bound:
        raise ValueError(
            f"--duration {opts.duration} gives crops of {crop} samples, too short for {what}: "
            f"more than {bound} samples needed"
        )


def common_options(args: argparse.Namespace) -> TrainOptions:
    """The shared options from parsed arguments; ``ValueError`` naming the flag for an invalid value."""
    return dataclass_from_args(TrainOptions, args)


def flow_matching_options(args: argparse.Namespace) -> FlowMatchingOptions:
    """Stage-1 options from parsed arguments."""
    return dataclass_from_args(FlowMatchingOptions, args)


def gan_options(args: argparse.Namespace) -> GANOptions:
    """Stage-2 options from parsed arguments."""
    return dataclass_from_args(GANOptions, args)
