"""Generators from experiment directories: averaged checkpoints -> deployable ``{"model": ...}`` files."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from flow2gan.checkpoint import load_state_dict_checked
from flow2gan.config import get_generator_config
from flow2gan.models.gan import GAN
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import build_generator
from flow2gan.training.checkpoints import averaged_state_dict, epoch_path, read_training_checkpoint

logger = logging.getLogger(__name__)


def averaged_model_name(epoch: int, avg: int, use_averaged_model: bool, load_gan: bool) -> str:
    """``epoch-{E}-avg-{A}[-use-avg-model][-only-gen]`` (reference naming)."""
    return (
        f"epoch-{epoch}-avg-{avg}"
        + ("-use-avg-model" if use_averaged_model else "")
        + ("-only-gen" if load_gan else "")
    )


def load_experiment_generator(
    exp_dir: Path,
    epoch: int,
    avg: int,
    use_averaged_model: bool,
    model_name: str,
    load_gan: bool = False,
    gan_name: str = "gan_multi_scale_mel_recon",
) -> tuple[MelAudioGenerator, int | None]:
    """Average an experiment's checkpoints and load them strictly; returns (generator, its N if stage 2).

    With ``load_gan`` the checkpoints hold the GAN wrapper: it is averaged whole and its generator returned.
    """
    config = get_generator_config(model_name)
    generator = build_generator(config)
    module: nn.Module = generator
    if load_gan:
        module = GAN.from_config(generator, gan_name)
    state = averaged_state_dict(Path(exp_dir), epoch, avg, use_averaged_model)
    load_state_dict_checked(module, state, strict=True)
    n_timesteps = (
        read_training_checkpoint(epoch_path(exp_dir, epoch)).get("n_timesteps") if load_gan else None
    )
    logger.info("averaged %s of %s", averaged_model_name(epoch, avg, use_averaged_model, load_gan), exp_dir)
    return generator.eval(), n_timesteps
