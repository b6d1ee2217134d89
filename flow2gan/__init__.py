"""flow2gan: few-step mel- or token-to-waveform generation with flow matching and GAN fine-tuning.

Names are imported lazily, so ``flow2gan.onnx`` works in an environment without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_checkpoint": "flow2gan.weights",
    "CONFIGS": "flow2gan.config",
    "GeneratorConfig": "flow2gan.config",
    "get_generator_config": "flow2gan.config",
    "LinearFilterSpectrogram": "flow2gan.features",
    "LogMelSpectrogram": "flow2gan.features",
    "MelSpectrogram": "flow2gan.features",
    "MelAudioGenerator": "flow2gan.models.generator",
    "TokenAudioGenerator": "flow2gan.models.token_generator",
    "TokenGeneratorConfig": "flow2gan.config",
    "EncodecTokenizer": "flow2gan.codec",
    "HF_MODELS": "flow2gan.pretrained",
    "get_model": "flow2gan.pretrained",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'flow2gan' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
