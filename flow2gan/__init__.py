"""flow2gan: few-step mel-to-waveform generation with flow matching and GAN fine-tuning."""

from flow2gan.checkpoint import load_checkpoint
from flow2gan.config import CONFIGS, GeneratorConfig, get_generator_config
from flow2gan.features import LinearFilterSpectrogram, LogMelSpectrogram, MelSpectrogram
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.pretrained import HF_MODELS, get_model

__all__ = [
    "CONFIGS",
    "HF_MODELS",
    "GeneratorConfig",
    "LinearFilterSpectrogram",
    "LogMelSpectrogram",
    "MelAudioGenerator",
    "MelSpectrogram",
    "get_generator_config",
    "get_model",
    "load_checkpoint",
]

__version__ = "0.1.0"
