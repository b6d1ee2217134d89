"""Reading and writing weight files in the reference format ``{"model": state_dict, ...}``."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

DDP_PREFIX = "module."
GENERATOR_PREFIX = "generator."


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename: a kill never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint dict on CPU; a bare state dict is wrapped as ``{"model": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a dict")
    if "model" not in ckpt:
        if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
            return {"model": dict(ckpt)}
        raise ValueError(f"checkpoint {path} has no 'model' entry (keys: {sorted(ckpt)[:10]})")
    return dict(ckpt)


def adapt_state_dict(state_dict: Mapping[str, Tensor], target_keys: set[str]) -> dict[str, Tensor]:
    """Strip a DDP ``module.`` prefix, and take the ``generator.`` part of a GAN checkpoint if needed."""
    sd = dict(state_dict)
    if sd and all(k.startswith(DDP_PREFIX) for k in sd):
        sd = {k[len(DDP_PREFIX) :]: v for k, v in sd.items()}
    has_gen = any(k.startswith(GENERATOR_PREFIX) for k in sd)
    wants_gen = any(k.startswith(GENERATOR_PREFIX) for k in target_keys)
    if has_gen and not wants_gen:
        sd = {k[len(GENERATOR_PREFIX) :]: v for k, v in sd.items() if k.startswith(GENERATOR_PREFIX)}
    return sd


def _describe(keys: list[str], limit: int = 8) -> str:
    """Comma list of at most ``limit`` keys, with a count of the rest."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_checked(module: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True) -> None:
    """Load with clear errors: strict mode names missing/unexpected keys; non-strict warns, never no-ops."""
    sd = adapt_state_dict(state_dict, set(module.state_dict()))
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and sd[k].shape != v.shape
    ]
    problems = []
    if strict and missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch (checkpoint vs model): {_describe(mismatched, 4)}")
    if problems:
        raise ValueError(
            "checkpoint does not match the model: "
            + "; ".join(problems)
            + " (is the model name the config the checkpoint was trained with?)"
        )
    if len(missing) == len(own):
        raise ValueError(f"no checkpoint key matches the model (checkpoint keys: {_describe(list(sd))})")
    if missing or unexpected:
        logger.warning("non-strict load: %d missing, %d unexpected keys", len(missing), len(unexpected))
    module.load_state_dict(sd, strict=False)


def load_checkpoint(
    path: str | Path, model: nn.Module, strict: bool = True, weights_only: bool = True
) -> dict[str, Any]:
    """Load ``ckpt["model"]`` into ``model`` and return the other top-level entries of the file."""
    ckpt = read_checkpoint(path, weights_only=weights_only)
    try:
        load_state_dict_checked(model, ckpt["model"], strict=strict)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return {k: v for k, v in ckpt.items() if k != "model"}
