"""Experiment checkpoints: ``exp_dir/epoch-{e}.pt`` files, resume, pruning and averaged exports.

A training checkpoint (SPEC section 5.5, reference keys) is ``{model, model_avg, optimizer, scheduler,
[optimizer_disc, scheduler_disc], grad_scaler, sampler, batch_idx_train, cur_epoch, <options>,
generator_config, env_info}``; an averaged export is the deployable ``{"model": generator_state_dict,
"generator_config": {...}[, "n_timesteps": N]}`` that ``get_model(checkpoint=...)`` loads.
"""

from __future__ import annotations

import logging
import platform
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flow2gan.compat import CHECKPOINT_PLACEHOLDERS
from flow2gan.config import GeneratorConfig, config_from_dict, get_generator_config
from flow2gan.models.gan import GAN
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import build_generator
from flow2gan.training.averaging import average_checkpoints_with_averaged_model, average_state_dicts
from flow2gan.weights import UnsafeCheckpointError, load_state_dict_checked, read_checkpoint, save_atomic

logger = logging.getLogger(__name__)

EPOCH_FILE = re.compile(r"^epoch-(\d+)\.pt$")
MID_EPOCH_FILE = re.compile(r"^epoch-(\d+)-batch-(\d+)\.pt$")
DEFAULT_MODEL_NAME = "mel_24k_base"
DEFAULT_GAN_NAME = "gan_multi_scale_mel_recon"


def env_info() -> dict[str, str]:
    """Versions and host recorded in every checkpoint (``env_info``)."""
    return {
        "torch_version": str(torch.__version__),
        "python_version": platform.python_version(),
        "torch_cuda_available": str(torch.cuda.is_available()),
        "hostname": socket.gethostname(),
    }


def epoch_path(exp_dir: Path, epoch: int) -> Path:
    """``exp_dir/epoch-{epoch}.pt``."""
    return Path(exp_dir) / f"epoch-{epoch}.pt"


def saved_epochs(exp_dir: Path) -> list[int]:
    """Sorted epochs ``e`` with a complete ``epoch-{e}.pt`` (atomic writes: a present file is complete)."""
    names = (EPOCH_FILE.match(p.name) for p in Path(exp_dir).glob("epoch-*.pt"))
    return sorted(int(m.group(1)) for m in names if m)


def latest_epoch(exp_dir: Path) -> int:
    """The largest saved epoch in ``exp_dir`` (0 when there is none)."""
    return max(saved_epochs(exp_dir), default=0)


def mid_epoch_path(exp_dir: Path, epoch: int, batches_done: int) -> Path:
    """``exp_dir/epoch-{epoch}-batch-{batches_done}.pt``: saved after that many batches of the epoch."""
    return Path(exp_dir) / f"epoch-{epoch}-batch-{batches_done}.pt"


def saved_mid_epoch(exp_dir: Path) -> list[tuple[int, int]]:
    """Sorted ``(epoch, batches_done)`` of the complete mid-epoch checkpoints in ``exp_dir``."""
    names = (MID_EPOCH_FILE.match(p.name) for p in Path(exp_dir).glob("epoch-*-batch-*.pt"))
    return sorted((int(m.group(1)), int(m.group(2))) for m in names if m)


@dataclass(frozen=True)
class ResumePoint:
    """Where a run continues: ``epoch`` after ``batches_done`` of its batches, from ``path`` (None: fresh)."""

    path: Path | None
    epoch: int
    batches_done: int = 0


def resume_candidates(exp_dir: Path) -> list[ResumePoint]:
    """Every checkpoint of ``exp_dir``, newest first: ``epoch-{e}.pt`` continues at epoch e + 1, batch 0.

    Temporary files of interrupted writes never match the checkpoint names.
    """
    points = [ResumePoint(epoch_path(exp_dir, e), e + 1) for e in saved_epochs(exp_dir)]
    points += [ResumePoint(mid_epoch_path(exp_dir, e, k), e, k) for e, k in saved_mid_epoch(exp_dir)]
    return sorted(points, key=lambda p: (p.epoch, p.batches_done), reverse=True)


def resume_points(exp_dir: Path, resume: str | None, start_epoch: int) -> list[ResumePoint]:
    """Checkpoints a run continues from, best first; empty for a fresh start.

    ``resume`` ``"auto"`` (``--resume auto``): every complete checkpoint, newest first (epoch-end or
    mid-epoch); ``start_epoch`` e > 1 (``--start-epoch``): ``epoch-{e-1}.pt``, which must exist
    (``FileNotFoundError``).
    """
    if resume == "auto":
        return resume_candidates(exp_dir)
    if start_epoch > 1:
        path = epoch_path(exp_dir, start_epoch - 1)
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise FileNotFoundError(f"cannot resume at epoch {start_epoch}: {path} {what}")
        return [ResumePoint(path, start_epoch)]
    return []


def set_aside(path: Path) -> Path:
    """Rename a checkpoint ``--resume auto`` skipped to ``<name>.skipped`` (``.skipped-2``, ... if taken).

    The resumed run would otherwise write its own checkpoint of that name over it. Returns the new path.
    """
    target = path.with_name(f"{path.name}.skipped")
    n = 2
    while target.exists():
        target = path.with_name(f"{path.name}.skipped-{n}")
        n += 1
    return path.rename(target)


def prune_checkpoints(exp_dir: Path, keep_last_k: int) -> list[Path]:
    """Keep the newest ``keep_last_k`` epoch files and, apart, the newest ``keep_last_k`` mid-epoch files.

    ``keep_last_k <= 0`` keeps all. Returns the deleted paths.
    """
    if keep_last_k <= 0:
        return []
    removed = [epoch_path(exp_dir, e) for e in saved_epochs(exp_dir)[:-keep_last_k]]
    removed += [mid_epoch_path(exp_dir, e, k) for e, k in saved_mid_epoch(exp_dir)[:-keep_last_k]]
    for path in removed:
        path.unlink(missing_ok=True)
        logger.info("removed %s (--keep-last-k %d)", path, keep_last_k)
    return removed


def state_dict_of(obj: Any) -> Any:
    """``obj.state_dict()`` or None."""
    return None if obj is None else obj.state_dict()


def save_training_checkpoint(
    path: Path,
    model: nn.Module,
    model_avg: nn.Module | None,
    states: dict[str, Any],
    params: dict[str, Any],
    avg_to_float32: bool = True,
) -> None:
    """Write ``{model, model_avg, <optimizer/scheduler/scaler states>, sampler, **params}`` atomically.

    With ``avg_to_float32`` (epoch files) ``model_avg`` is converted to float32 in place, as the
    reference does (later averaging runs in fp32); mid-epoch files store it as it is.
    """
    ckpt: dict[str, Any] = {"model": model.state_dict(), **CHECKPOINT_PLACEHOLDERS}
    if model_avg is not None:
        if avg_to_float32:
            model_avg.to(torch.float32)
        ckpt["model_avg"] = model_avg.state_dict()
    ckpt.update({key: state_dict_of(obj) for key, obj in states.items()})
    ckpt.update(params)
    ckpt["env_info"] = env_info()
    save_atomic(ckpt, path)
    logger.info("saved %s", path)


def read_training_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Read a training checkpoint; files with non-tensor objects (reference runs) load as trusted.

    ``mmap``: see :func:`flow2gan.weights.read_checkpoint`.
    """
    try:
        return read_checkpoint(path, weights_only=True, mmap=mmap)
    except UnsafeCheckpointError:
        logger.warning("%s holds Python objects beyond tensors; loading it as a trusted file", path)
        return read_checkpoint(path, weights_only=False, mmap=mmap)


def restore_training_state(
    ckpt: dict[str, Any],
    path: Path,
    model: nn.Module,
    model_avg: nn.Module | None,
    states: dict[str, Any],
) -> None:
    """Restore model (non-strict), model_avg (into its float64 copy) and states from a read checkpoint.

    ``ValueError`` naming ``path`` when its weights do not fit ``model`` (another config, or no key
    in common: :func:`flow2gan.weights.load_state_dict_checked`).
    """
    try:
        load_state_dict_checked(model, ckpt["model"], strict=False)
        if model_avg is not None and ckpt.get("model_avg") is not None:
            dtype = next(model_avg.parameters()).dtype
            load_state_dict_checked(model_avg, ckpt["model_avg"], strict=False)
            model_avg.to(dtype)
    except ValueError as exc:
        raise ValueError(f"cannot resume from {path}: {exc}") from exc
    for key, obj in states.items():
        if obj is not None and ckpt.get(key) is not None:
            obj.load_state_dict(ckpt[key])
    logger.info("resumed from %s (batch_idx_train=%s)", path, ckpt.get("batch_idx_train"))


_EPOCH_ENTRIES = {
    "model": (dict, "a state dict"),
    "model_avg": (dict, "a state dict"),
    "batch_idx_train": (int, "an int"),
    "mid_epoch": (dict, "a dict"),
}


def check_entries(ckpt: dict[str, Any], path: Path, *keys: str) -> dict[str, Any]:
    """``ckpt`` (read from ``path``), checked to hold ``keys`` (of ``model``, ``model_avg``,
    ``batch_idx_train``, ``mid_epoch``) with values of the right type; ``ValueError`` naming the file and
    what it lacks otherwise (a bare or exported weight file, a file of a non-zero rank, which has no
    ``model_avg``, a hand-made one)."""
    lacking = [
        f"{key} ({_EPOCH_ENTRIES[key][1]})"
        for key in keys
        if not isinstance(ckpt.get(key), _EPOCH_ENTRIES[key][0])
    ]
    if lacking:
        raise ValueError(f"{path} has no {', '.join(lacking)}: not a checkpoint of rank 0 of a training run")
    return ckpt


def read_epoch_entries(exp_dir: Path, epoch: int, *keys: str) -> dict[str, Any]:
    """``epoch-{epoch}.pt`` of ``exp_dir`` as read by :func:`read_training_checkpoint`, checked by
    :func:`check_entries` to hold ``keys``."""
    path = epoch_path(exp_dir, epoch)
    return check_entries(read_training_checkpoint(path), path, *keys)


def read_resume_checkpoint(point: ResumePoint, gan: bool, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint a run continues from, checked to hold what resuming reads: ``model`` and
    ``batch_idx_train``, and ``mid_epoch`` for a mid-epoch file, saved by the same stage (``gan``: stage
    2, whose ``model`` is the GAN wrapper with ``generator.*`` keys). ``mmap`` leaves the tensors on
    disk (a cheap check before any work). Raises ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    keys = ("model", "batch_idx_train", *(("mid_epoch",) if point.batches_done else ()))
    ckpt = check_entries(read_training_checkpoint(point.path, mmap=mmap), point.path, *keys)
    saved_by_gan = any(key.startswith("generator.") for key in ckpt["model"])
    if saved_by_gan != gan:
        stages = ["stage 1 (pretrain)", "stage 2 (finetune)"]
        raise ValueError(
            f"{point.path} was saved by {stages[saved_by_gan]}, which {stages[gan]} cannot resume "
            "(another --exp-dir?)"
        )
    return ckpt


def averaged_state_dict(
    exp_dir: Path, epoch: int, avg: int, use_averaged_model: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Average an experiment's checkpoints as ``save_averaged_model`` does (SPEC section 5.5).

    With ``use_averaged_model``: the window average over epochs (epoch - avg, epoch] computed from the
    running averages stored in ``epoch-{epoch-avg}.pt`` and ``epoch-{epoch}.pt``. Otherwise the ``model``
    of ``epoch-{epoch}.pt`` (avg = 1) or the plain mean over the last ``avg`` epoch files.
    Returns ``(state_dict, other entries of epoch-{epoch}.pt)``; raises ``ValueError`` for a bad window
    or an epoch file without the entries it needs (:func:`read_epoch_entries`).
    """
    if avg < 1:
        raise ValueError(f"--avg must be >= 1, got {avg}")
    if use_averaged_model:
        start_epoch = epoch - avg
        if start_epoch < 1:
            raise ValueError(f"--use-averaged-model needs epoch - avg >= 1, got {epoch} - {avg}")
        keys = ("model_avg", "batch_idx_train")
        start, end = (read_epoch_entries(exp_dir, e, *keys) for e in (start_epoch, epoch))
        state = average_checkpoints_with_averaged_model(
            start["model_avg"], end["model_avg"], int(start["batch_idx_train"]), int(end["batch_idx_train"])
        )
    else:
        end = read_epoch_entries(exp_dir, epoch, "model")
        earlier = range(max(1, epoch - avg + 1), epoch)
        models = [read_epoch_entries(exp_dir, e, "model")["model"] for e in earlier]
        state = average_state_dicts([*models, end["model"]])
    return state, {k: v for k, v in end.items() if k not in ("model", "model_avg")}


def averaged_model_name(epoch: int, avg: int, use_averaged_model: bool, load_gan: bool) -> str:
    """``epoch-{E}-avg-{A}[-use-avg-model][-only-gen]`` (reference naming)."""
    return (
        f"epoch-{epoch}-avg-{avg}"
        + ("-use-avg-model" if use_averaged_model else "")
        + ("-only-gen" if load_gan else "")
    )


def checkpoint_generator_config(info: dict[str, Any], model_name: str | None) -> tuple[GeneratorConfig, str]:
    """``model_name`` when given (an override), else the config a training checkpoint stores, and
    where it came from (for messages).

    Checkpoints without ``generator_config`` (older runs, the reference's) fall back to their
    ``model_name`` entry, then to the reference default ``mel_24k_base``.
    """
    if model_name is not None:
        return get_generator_config(model_name), f"--model-name {model_name}"
    if info.get("generator_config") is not None:
        return config_from_dict(dict(info["generator_config"])), "the config it records"
    fallback = str(info.get("model_name") or DEFAULT_MODEL_NAME)
    logger.info("the checkpoint stores no generator config; using %s", fallback)
    return get_generator_config(fallback), f"{fallback}: it records no config; pass --model-name"


@dataclass(frozen=True)
class AveragedGenerator:
    """An experiment's averaged generator (eval mode), whether it came from a GAN run, and its N steps."""

    generator: MelAudioGenerator
    from_gan: bool
    n_timesteps: int | None

    def name(self, epoch: int, avg: int, use_averaged_model: bool) -> str:
        """The reference file stem of its export (``epoch-E-avg-A[-use-avg-model][-only-gen]``)."""
        return averaged_model_name(epoch, avg, use_averaged_model, self.from_gan)


def load_experiment_generator(
    exp_dir: Path,
    epoch: int,
    avg: int,
    use_averaged_model: bool,
    model_name: str | None = None,
    load_gan: bool | None = None,
    gan_name: str | None = None,
) -> AveragedGenerator:
    """Average an experiment's checkpoints and load them strictly into a generator.

    ``model_name``, ``load_gan`` and ``gan_name`` default to what ``epoch-{epoch}.pt`` records (its
    generator config; a stage-2 run holds the GAN wrapper, averaged whole, of which the generator is
    returned, in eval mode).
    """
    state, info = averaged_state_dict(Path(exp_dir), epoch, avg, use_averaged_model)
    config, source = checkpoint_generator_config(info, model_name)
    if load_gan is None:
        load_gan = any(k.startswith("discriminator.") for k in state)
    generator = build_generator(config)
    module: nn.Module = generator
    if load_gan:
        module = GAN.from_config(generator, gan_name or str(info.get("gan_name") or DEFAULT_GAN_NAME))
        if not any(k.startswith("generator.") for k in state):
            raise ValueError(
                f"{epoch_path(Path(exp_dir), epoch)} holds a stage-1 (pretrain) generator, not the GAN of "
                "a stage-2 run: pass --load-gan false"
            )
    try:
        load_state_dict_checked(module, state, strict=True)
    except ValueError as exc:
        raise ValueError(f"{epoch_path(Path(exp_dir), epoch)} ({source}): {exc}") from exc
    result = AveragedGenerator(generator.eval(), load_gan, info.get("n_timesteps") if load_gan else None)
    logger.info("averaged %s of %s", result.name(epoch, avg, use_averaged_model), exp_dir)
    return result


def export_generator(generator: MelAudioGenerator, n_timesteps: int | None, path: Path) -> None:
    """Write the deployable ``{"model", "generator_config"[, "n_timesteps"]}`` file atomically."""
    ckpt: dict[str, Any] = {"model": generator.state_dict(), "generator_config": generator.config.to_dict()}
    if n_timesteps is not None:
        ckpt["n_timesteps"] = n_timesteps
    save_atomic(ckpt, path)
    logger.info("saved %s", path)
