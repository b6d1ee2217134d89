"""Import shim that lets ``torchcrepe`` load in an environment without torchaudio."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from types import ModuleType

_STUB_NAME = "torchaudio"


def _torchaudio_stub() -> ModuleType:
    """A placeholder ``torchaudio`` whose only attribute, ``load``, raises a clear ImportError."""
    stub = types.ModuleType(_STUB_NAME)
    stub.__doc__ = "flow2gan placeholder: torchaudio is not installed (torchcrepe file loading is disabled)."

    def load(*args: object, **kwargs: object) -> None:
        raise ImportError(
            "torchaudio is not installed; torchcrepe.load.audio / *_from_file are unavailable. "
            "Load audio with flow2gan.audio and call torchcrepe.predict on the tensor instead."
        )

    stub.load = load  # type: ignore[attr-defined]
    return stub


def import_torchcrepe() -> ModuleType:
    """Import and return ``torchcrepe`` even when torchaudio is not installed.

    torchcrepe's only use of torchaudio is ``torchcrepe/load.py``: a module-level ``import torchaudio``
    for its file loader ``load.audio`` (``torchaudio.load``). Its pitch model, ``predict``, resampling
    (resampy), loudness (librosa) and thresholds never touch torchaudio. So, only when torchaudio
    cannot be found, a stub module is placed in ``sys.modules`` for the duration of the import and
    removed right after; ``torchcrepe.load.audio`` then raises an ImportError explaining why.
    A real torchaudio, when present, is used untouched.
    """
    if "torchcrepe" in sys.modules:
        return sys.modules["torchcrepe"]
    if _STUB_NAME in sys.modules or importlib.util.find_spec(_STUB_NAME) is not None:
        return importlib.import_module("torchcrepe")
    stub = _torchaudio_stub()
    sys.modules[_STUB_NAME] = stub
    try:
        return importlib.import_module("torchcrepe")
    finally:
        if sys.modules.get(_STUB_NAME) is stub:
            del sys.modules[_STUB_NAME]
