"""Training checkpoints ``exp_dir/epoch-{e}.pt`` (SPEC §5.5): save atomically, find, resume."""

from __future__ import annotations

import logging
import pickle
import platform
import re
import socket
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flow2gan.checkpoint import read_checkpoint, save_atomic
from flow2gan.training.averaging import average_checkpoints_with_averaged_model, average_state_dicts

logger = logging.getLogger(__name__)

EPOCH_FILE = re.compile(r"^epoch-(\d+)\.pt$")


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


def latest_epoch(exp_dir: Path) -> int:
    """The largest ``e`` with a complete ``epoch-{e}.pt`` in ``exp_dir`` (0 when there is none)."""
    epochs = [int(m.group(1)) for p in Path(exp_dir).glob("epoch-*.pt") if (m := EPOCH_FILE.match(p.name))]
    return max(epochs, default=0)


def state_dict_of(obj: Any) -> Any:
    """``obj.state_dict()`` or None."""
    return None if obj is None else obj.state_dict()


def save_training_checkpoint(
    path: Path,
    model: nn.Module,
    model_avg: nn.Module | None,
    states: dict[str, Any],
    params: dict[str, Any],
) -> None:
    """Write ``{model, model_avg, <optimizer/scheduler/scaler states>, sampler, **params}`` atomically.

    ``model_avg`` is converted to float32 in place, as the reference does (later averaging runs in fp32).
    """
    ckpt: dict[str, Any] = {"model": model.state_dict(), "sampler": None}
    if model_avg is not None:
        model_avg.to(torch.float32)
        ckpt["model_avg"] = model_avg.state_dict()
    ckpt.update({key: state_dict_of(obj) for key, obj in states.items()})
    ckpt.update(params)
    ckpt["env_info"] = env_info()
    save_atomic(ckpt, path)
    logger.info("saved %s", path)


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint; files with non-tensor objects (reference runs) load as trusted."""
    try:
        return read_checkpoint(path, weights_only=True)
    except pickle.UnpicklingError:
        logger.warning("%s holds Python objects beyond tensors; loading it as a trusted file", path)
        return read_checkpoint(path, weights_only=False)


def load_training_checkpoint(
    path: Path,
    model: nn.Module,
    model_avg: nn.Module | None,
    states: dict[str, Any],
) -> dict[str, Any]:
    """Restore model (non-strict), model_avg (into its float64 copy) and states; returns the other entries."""
    ckpt = read_training_checkpoint(path)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        logger.warning("resume %s: %d missing, %d unexpected keys", path, len(missing), len(unexpected))
    if model_avg is not None and ckpt.get("model_avg") is not None:
        dtype = next(model_avg.parameters()).dtype
        model_avg.load_state_dict(ckpt["model_avg"], strict=False)
        model_avg.to(dtype)
    for key, obj in states.items():
        if obj is not None and ckpt.get(key) is not None:
            obj.load_state_dict(ckpt[key])
    logger.info("resumed from %s (batch_idx_train=%s)", path, ckpt.get("batch_idx_train"))
    return ckpt


def averaged_state_dict(exp_dir: Path, epoch: int, avg: int, use_averaged_model: bool) -> dict[str, Any]:
    """Average an experiment's checkpoints as ``save_averaged_model`` does (SPEC §5.5).

    With ``use_averaged_model``: the window average over epochs (epoch - avg, epoch] computed from the
    running averages stored in ``epoch-{epoch-avg}.pt`` and ``epoch-{epoch}.pt``. Otherwise the ``model``
    of ``epoch-{epoch}.pt`` (avg = 1) or the plain mean over the last ``avg`` epoch files.
    """
    if avg < 1:
        raise ValueError(f"--avg must be >= 1, got {avg}")
    if use_averaged_model:
        start_epoch = epoch - avg
        if start_epoch < 1:
            raise ValueError(f"--use-averaged-model needs epoch - avg >= 1, got {epoch} - {avg}")
        start = read_training_checkpoint(epoch_path(exp_dir, start_epoch))
        end = read_training_checkpoint(epoch_path(exp_dir, epoch))
        for ckpt, e in ((start, start_epoch), (end, epoch)):
            if ckpt.get("model_avg") is None:
                raise ValueError(f"{epoch_path(exp_dir, e)} has no model_avg (saved by a non-zero rank?)")
        return average_checkpoints_with_averaged_model(
            start["model_avg"], end["model_avg"], int(start["batch_idx_train"]), int(end["batch_idx_train"])
        )
    epochs = [e for e in range(epoch - avg + 1, epoch + 1) if e >= 1]
    return average_state_dicts([read_training_checkpoint(epoch_path(exp_dir, e))["model"] for e in epochs])
