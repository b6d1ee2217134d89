"""Reading and writing weight files in the reference format ``{"model": state_dict, ...}``."""

from __future__ import annotations

import logging
import os
import pathlib
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flow2gan.config import GeneratorConfig, config_from_dict, get_generator_config

logger = logging.getLogger(__name__)

DDP_PREFIX = "module."
GENERATOR_PREFIX = "generator."


def file_mode() -> int:
    """Permission bits of a new regular file under the process umask (0o666 & ~umask, e.g. 0o644)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temp file in ``path``'s folder, then rename it to ``path``.

    A kill never leaves a partial file at ``path``; parents are created; the file gets the normal
    permissions of a new file (umask respected, not ``mkstemp``'s 0600). Errors of ``write`` propagate
    (the temp file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


# Harmless non-tensor globals of the reference's training checkpoints (``exp_dir`` is a pathlib.Path,
# SPEC 5.5), under every name a Python version pickles them with. Concrete paths are rebuilt as pure
# paths, which exist on every OS (a WindowsPath cannot be created on Linux); the values are never used
# for file access.
SAFE_GLOBALS: list[tuple[type, str]] = [
    (pure, name)
    for concrete, pure in (
        (pathlib.PosixPath, pathlib.PurePosixPath),
        (pathlib.WindowsPath, pathlib.PureWindowsPath),
        (pathlib.PurePosixPath, pathlib.PurePosixPath),
        (pathlib.PureWindowsPath, pathlib.PureWindowsPath),
    )
    for name in sorted({f"pathlib.{concrete.__name__}", f"{concrete.__module__}.{concrete.__qualname__}"})
]
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class UnsafeCheckpointError(ValueError):
    """A checkpoint that pickles Python objects outside the weights-only allow-list (names in the message)."""


def describe_unreadable(path: Path, exc: Exception) -> str:
    """What a file that ``torch.load`` could not read looks like, and what to do with it."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"not readable ({err.strerror or err})"
    if not head:
        return "an empty file"
    if head[:4] in (b"RIFF", b"fLaC", b"OggS") or head[:3] == b"ID3":
        return "an audio file, not model weights"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file, not model weights (a generator config goes to model_name / --model-name)"
    if path.suffix.lower() == ".onnx":
        return "an ONNX model (run it with flow2gan.onnx.OnnxVocoder), not PyTorch weights"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("constants.pkl") for name in names):
            return "a TorchScript archive (export --format torchscript; run it with torch.jit.load)"
        if not any(name.endswith("data.pkl") for name in names):
            return "a zip archive that is not a PyTorch checkpoint"
    unsafe = sorted(set(_UNSAFE_GLOBAL.findall(str(exc))))
    if unsafe:
        return (
            f"a PyTorch file that pickles Python objects other than weights ({', '.join(unsafe)}), which "
            "are not loaded without trusting the file. If you trust it, keep only its weights: "
            "torch.save({'model': torch.load(path, weights_only=False)['model']}, 'weights.pt')"
        )
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if first.startswith("Weights only load failed"):  # torch's advice on weights_only, not about this file
        return "not a readable PyTorch checkpoint (damaged, truncated or another format)"
    return f"not a readable PyTorch checkpoint (damaged, truncated or another format: {first})"


def read_checkpoint(path: str | Path, weights_only: bool = True, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict on CPU; a bare state dict is wrapped as ``{"model": ...}``.

    With ``weights_only`` (the default) only tensors, plain values and :data:`SAFE_GLOBALS` are
    unpickled, so the reference's ``epoch-N.pt`` files are read without trusting them. ``mmap`` maps
    the tensors instead of reading them (a cheap check that the file loads; files of torch's legacy
    format, which cannot be mapped, are read). Raises
    ``FileNotFoundError`` for a missing file, :class:`UnsafeCheckpointError` for other pickled objects,
    and ``ValueError`` naming the path and what the file is when it cannot be read or holds no weights.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder, not a weight file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except Exception as exc:  # torch.load raises many types for foreign, damaged or unsafe files
        message = f"cannot read checkpoint {path}: it is {describe_unreadable(path, exc)}"
        unsafe = isinstance(exc, pickle.UnpicklingError) and _UNSAFE_GLOBAL.search(str(exc))
        raise (UnsafeCheckpointError if unsafe else ValueError)(message) from exc
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


def stored_config(ckpt: Mapping[str, Any]) -> GeneratorConfig | None:
    """The generator config a weight file records: ``ckpt["generator_config"]`` (a constructor dict, as
    ``save_averaged_model`` writes it; also read under ``config``) or ``ckpt["model_name"]`` (a registered
    name or JSON path); None for files without one (the released ones)."""
    for key in ("generator_config", "config"):
        if isinstance(ckpt.get(key), Mapping):
            return config_from_dict(dict(ckpt[key]))
    if isinstance(ckpt.get("model_name"), str):
        return get_generator_config(ckpt["model_name"])
    return None


def load_weights(
    ckpt: Mapping[str, Any], model: nn.Module, strict: bool = True, path: str | Path = "checkpoint"
) -> dict[str, Any]:
    """Load ``ckpt["model"]`` (as read by :func:`read_checkpoint`) into ``model``; returns the other entries.

    ``ValueError`` prefixed with ``path`` when the keys or shapes do not match.
    """
    try:
        load_state_dict_checked(model, ckpt["model"], strict=strict)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return {k: v for k, v in ckpt.items() if k != "model"}


def load_checkpoint(
    path: str | Path, model: nn.Module, strict: bool = True, weights_only: bool = True
) -> dict[str, Any]:
    """Load ``ckpt["model"]`` into ``model`` and return the other top-level entries of the file."""
    return load_weights(read_checkpoint(path, weights_only=weights_only), model, strict, path)
