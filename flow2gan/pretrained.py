"""Released checkpoints on the Hugging Face hub and ``get_model``, the one-line way to a ready vocoder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from flow2gan.checkpoint import load_checkpoint
from flow2gan.config import GeneratorConfig, get_generator_config
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import build_generator

logger = logging.getLogger(__name__)

HF_REPO_ID = "k2-fsa/Flow2GAN"


@dataclass(frozen=True)
class PretrainedModel:
    """A released file: its generator config name and the Euler step count it was fine-tuned for."""

    model_name: str
    n_timesteps: int


HF_MODELS: dict[str, PretrainedModel] = {
    f"{prefix}-{n}-step": PretrainedModel(config, n)
    for prefix, config in (
        ("libritts-mel", "mel_24k_base"),
        ("universal-24k-mel", "mel_24k_base"),
        ("universal-44k-mel-128band-512x", "mel_44k_128band_512x_base"),
    )
    for n in (1, 2, 4)
}


def pretrained_info(hf_model_name: str) -> PretrainedModel:
    """Look up a released model name; an unknown name is a ``ValueError`` listing the valid ones."""
    if hf_model_name not in HF_MODELS:
        raise ValueError(f"unknown hf_model_name {hf_model_name!r}; choose one of: {', '.join(HF_MODELS)}")
    return HF_MODELS[hf_model_name]


def _check_compatible(hf_model_name: str, info: PretrainedModel, config: GeneratorConfig) -> None:
    """A config must share the released model's audio front-end (rate, mel bands, hop) to use its file."""
    released = get_generator_config(info.model_name)
    keys = ("sampling_rate", "n_mels", "mel_hop_length")
    if any(getattr(config, k) != getattr(released, k) for k in keys):
        raise ValueError(
            f"{hf_model_name} is a {info.model_name} model "
            f"({', '.join(f'{k}={getattr(released, k)}' for k in keys)}); the requested config has "
            f"{', '.join(f'{k}={getattr(config, k)}' for k in keys)}"
        )


def download_pretrained(hf_model_name: str) -> Path:
    """Path of ``<hf_model_name>.pt`` from the hub repo (downloaded once, then read from the HF cache)."""
    from huggingface_hub import hf_hub_download

    pretrained_info(hf_model_name)
    return Path(hf_hub_download(repo_id=HF_REPO_ID, filename=f"{hf_model_name}.pt"))


def get_model(
    model_name: str | None = None,
    hf_model_name: str | None = "libritts-mel-4-step",
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
) -> tuple[MelAudioGenerator, GeneratorConfig]:
    """Build a generator and load weights (local ``checkpoint`` wins over ``hf_model_name``); eval mode.

    ``model_name`` is a registered config name or a JSON config path; by default it is the config
    of the released model, or ``mel_24k_base`` for a local checkpoint. A token config
    (``encodec_24k_base``, ``encodec_24k_small``) gives a ``TokenAudioGenerator``.
    Returns ``(model, config)``.
    """
    n_timesteps = None
    if checkpoint is None:
        if hf_model_name is None:
            raise ValueError("get_model needs checkpoint=<path> or hf_model_name=<released name>")
        info = pretrained_info(hf_model_name)
        if model_name is None:
            model_name = info.model_name
        else:
            _check_compatible(hf_model_name, info, get_generator_config(model_name))
        checkpoint = download_pretrained(hf_model_name)
        n_timesteps = info.n_timesteps
    config = get_generator_config(model_name or "mel_24k_base")
    model = build_generator(config)
    extras = load_checkpoint(checkpoint, model, strict=True)
    model.default_n_timesteps = n_timesteps or extras.get("n_timesteps")
    model.eval()
    if device is not None:
        model.to(device)
    logger.info("loaded %s (%s)", checkpoint, model_name)
    return model, config
