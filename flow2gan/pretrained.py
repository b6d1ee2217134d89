"""Released checkpoints on the Hugging Face hub and ``get_model``, the one-line way to a ready vocoder."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from flow2gan.config import GeneratorConfig, get_generator_config
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import build_generator
from flow2gan.weights import load_weights, read_checkpoint, stored_config

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


class HubUnavailableError(OSError):
    """A released file is not in the local Hugging Face cache and the hub cannot be used.

    Every command-line tool exits with :data:`EXIT_HUB_UNAVAILABLE` on it.
    """


EXIT_HUB_UNAVAILABLE = 3
HUB_PROBE_TIMEOUT_S = 3.0


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE`` / ``HF_HOME``; ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline_reason() -> str | None:
    """Why the hub cannot be used right now (``HF_HUB_OFFLINE`` set, or no connection), else None.

    Without a proxy, a TCP connection to the hub endpoint is tried for at most 3 s, so an offline
    machine fails at once instead of after huggingface_hub's retries.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"the hub ({host}) cannot be reached: {exc}"
    return None


def _unavailable(filename: str, reason: str) -> HubUnavailableError:
    """The one message for a released file that cannot be had."""
    return HubUnavailableError(
        f"{filename} is not in the Hugging Face cache ({hub_cache_dir()}) and {reason}. Download it once "
        "with network access (HF_HUB_OFFLINE unset), or use a local file: --checkpoint PATH on the "
        "command line, get_model(checkpoint=PATH) in Python."
    )


def download_pretrained(hf_model_name: str) -> Path:
    """Path of ``<hf_model_name>.pt`` from the hub repo (downloaded once, then read from the HF cache).

    Raises ``ValueError`` for an unknown name and :class:`HubUnavailableError` when the file is not
    cached and ``HF_HUB_OFFLINE`` is set or the hub is unreachable.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    pretrained_info(hf_model_name)
    filename = f"{hf_model_name}.pt"
    cached = try_to_load_from_cache(HF_REPO_ID, filename, cache_dir=hub_cache_dir())
    if isinstance(cached, str):
        return Path(cached)
    reason = hub_offline_reason()
    if reason is not None:
        raise _unavailable(filename, reason)
    try:
        return Path(hf_hub_download(repo_id=HF_REPO_ID, filename=filename, cache_dir=hub_cache_dir()))
    except OSError as exc:  # huggingface_hub's connection and cache errors are OSErrors
        raise _unavailable(filename, f"the download failed ({exc})") from exc


def get_model(
    model_name: str | None = None,
    hf_model_name: str | None = "libritts-mel-4-step",
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
) -> tuple[MelAudioGenerator, GeneratorConfig]:
    """Build a generator and load weights (local ``checkpoint`` wins over ``hf_model_name``); eval mode.

    The config is ``model_name`` (a registered name or a JSON config path) when given, else the one
    stored in the checkpoint (files written by ``save_averaged_model``), else the released model's,
    else ``mel_24k_base``. A token config (``encodec_24k_*``) gives a ``TokenAudioGenerator``.
    Returns ``(model, config)``. Raises ``ValueError`` (bad names, mismatched weights),
    ``FileNotFoundError`` and :class:`HubUnavailableError`.
    """
    n_timesteps = None
    default_name = "mel_24k_base"
    if checkpoint is None:
        if hf_model_name is None:
            raise ValueError("get_model needs checkpoint=<path> or hf_model_name=<released name>")
        info = pretrained_info(hf_model_name)
        if model_name is not None:
            _check_compatible(hf_model_name, info, get_generator_config(model_name))
        default_name = info.model_name
        checkpoint = download_pretrained(hf_model_name)
        n_timesteps = info.n_timesteps
    ckpt = read_checkpoint(checkpoint)
    stored = stored_config(ckpt)
    if model_name is not None:
        config = get_generator_config(model_name)
        if stored is not None and stored != config:
            logger.info("%s records another config; using --model-name %s", checkpoint, model_name)
    else:
        config = stored if stored is not None else get_generator_config(default_name)
    model = build_generator(config)
    extras = load_weights(ckpt, model, strict=True, path=checkpoint)
    model.default_n_timesteps = n_timesteps or extras.get("n_timesteps")
    model.eval()
    if device is not None:
        model.to(device)
    logger.info("loaded %s (%s)", checkpoint, model_name or ("stored config" if stored else default_name))
    return model, config
