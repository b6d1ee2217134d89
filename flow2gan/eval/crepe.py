"""Import shim that lets ``torchcrepe`` load where torchaudio is missing or cannot load.

torchcrepe declares torchaudio, so flow2gan installs it with ``pip install --no-deps torchcrepe``; where a
torchaudio is present anyway, next to a newer torch than it was built for, it fails to load its compiled
library. flow2gan never needs it (see :func:`import_torchcrepe`), so either way the pitch metrics work.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from types import ModuleType

logger = logging.getLogger(__name__)

_STUB_NAME = "torchaudio"
_ABSENT = object()


def _torchaudio_stub() -> ModuleType:
    """A placeholder ``torchaudio`` whose only attribute, ``load``, raises a clear ImportError."""
    stub = types.ModuleType(_STUB_NAME)
    stub.__doc__ = "flow2gan placeholder: torchaudio is not usable (torchcrepe file loading is disabled)."

    def load(*args: object, **kwargs: object) -> None:
        raise ImportError(
            "torchaudio is not installed (or cannot load with this torch); torchcrepe.load.audio / "
            "*_from_file are unavailable. Load audio with flow2gan.audio and call torchcrepe.predict "
            "on the tensor instead."
        )

    stub.load = load  # type: ignore[attr-defined]
    return stub


def _torchaudio_usable() -> bool:
    """Whether ``import torchaudio`` works; a failed import leaves no partial ``torchaudio*`` modules."""
    if _STUB_NAME in sys.modules:
        return sys.modules[_STUB_NAME] is not None
    if importlib.util.find_spec(_STUB_NAME) is None:
        return False
    try:
        importlib.import_module(_STUB_NAME)
    except Exception as exc:  # a torchaudio built for another torch raises OSError, RuntimeError, ...
        logger.info("torchaudio is installed but does not load (%s); torchcrepe runs without it", exc)
        for name in [n for n in sys.modules if n == _STUB_NAME or n.startswith(_STUB_NAME + ".")]:
            del sys.modules[name]
        return False
    return True


def import_torchcrepe() -> ModuleType:
    """Import and return ``torchcrepe`` even when torchaudio is not installed or cannot load.

    torchcrepe's only use of torchaudio is ``torchcrepe/load.py``: a module-level ``import torchaudio``
    for its file loader ``load.audio`` (``torchaudio.load``). Its pitch model, ``predict``, resampling
    (resampy), loudness (librosa) and thresholds never touch torchaudio. So, only when torchaudio
    cannot be imported, a stub module is placed in ``sys.modules`` for the duration of the import and
    removed right after; ``torchcrepe.load.audio`` then raises an ImportError explaining why.
    A working torchaudio is used untouched. Raises ``ImportError`` when torchcrepe (or one of its
    own dependencies) is not installed.
    """
    if sys.modules.get("torchcrepe") is not None:
        return sys.modules["torchcrepe"]
    if "torchcrepe" in sys.modules or _torchaudio_usable():
        return importlib.import_module("torchcrepe")
    previous = sys.modules.get(_STUB_NAME, _ABSENT)
    stub = _torchaudio_stub()
    sys.modules[_STUB_NAME] = stub
    try:
        return importlib.import_module("torchcrepe")
    finally:
        if sys.modules.get(_STUB_NAME) is stub:
            if previous is _ABSENT:
                del sys.modules[_STUB_NAME]
            else:
                sys.modules[_STUB_NAME] = previous
