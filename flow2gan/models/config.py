"""Reference import path ``flow2gan.models.config``: thin aliases, for scripts written against the reference.

    from flow2gan.models.config import get_generator_config, get_gan_config, HF_REPO, HF_MODEL_NAMES
    generator = MelAudioGenerator(**get_generator_config("mel_24k_base"))
    gan = GAN(generator, **get_gan_config("gan_multi_scale_mel_recon"))

Generator configs live in :mod:`flow2gan.config`, GAN-stage configs in :mod:`flow2gan.models.gan`;
both support attribute and item access (``cfg.n_mels == cfg["n_mels"]``) and ``**`` unpacking.
"""

from __future__ import annotations

from flow2gan.config import CONFIGS, HF_MODELS, HF_REPO_ID, GeneratorConfig, get_generator_config
from flow2gan.models.gan import GAN_CONFIGS, GANConfig, get_gan_config

__all__ = [
    "CONFIGS",
    "GAN_CONFIGS",
    "GANConfig",
    "GeneratorConfig",
    "HF_MODEL_NAMES",
    "HF_REPO",
    "get_gan_config",
    "get_generator_config",
]

HF_REPO = HF_REPO_ID
HF_MODEL_NAMES: tuple[str, ...] = tuple(HF_MODELS)
