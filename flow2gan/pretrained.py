"""Released checkpoints on the Hugging Face hub and ``get_model``, the one-line way to a ready vocoder."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from flow2gan.config import (
    CONFIGS,
    HF_MODELS,
    HF_REPO_ID,
    GeneratorConfig,
    PretrainedModel,
    get_generator_config,
    pretrained_info,
    released_pairs,
)
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import build_generator
from flow2gan.weights import load_weights, read_checkpoint, stored_config

__all__ = [
    "HF_MODELS",
    "HF_REPO_ID",
    "HubUnavailableError",
    "PretrainedModel",
    "download_pretrained",
    "get_model",
    "pretrained_info",
]

logger = logging.getLogger(__name__)

OTHER_WEIGHTS_HINT = "pass checkpoint=<file> for your own weights, or pretrained=False for a random model"


def _check_compatible(hf_model_name: str, info: PretrainedModel, model_name: str) -> None:
    """``ValueError`` unless ``model_name`` can hold the released file's weights.

    A registered config must be the released model's own; a JSON config must at least share its audio
    front-end (rate, mel bands, hop); its layer shapes are checked when the weights are loaded.
    """
    mismatch = f"hf_model_name {hf_model_name!r} holds a {info.model_name} model, not {model_name!r}"
    if model_name in CONFIGS:
        if model_name != info.model_name:
            raise ValueError(f"{mismatch}. Released models: {released_pairs()}; {OTHER_WEIGHTS_HINT}")
        return
    released, config = get_generator_config(info.model_name), get_generator_config(model_name)
    keys = ("sampling_rate", "n_mels", "mel_hop_length")
    if any(config[k] != released[k] for k in keys):
        raise ValueError(
            f"{mismatch} ({', '.join(f'{k}={released[k]}' for k in keys)}; the requested config has "
            f"{', '.join(f'{k}={config[k]}' for k in keys)}). Released models: {released_pairs()}"
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
    pretrained: bool = True,
) -> tuple[MelAudioGenerator, GeneratorConfig]:
    """Build a generator and load weights (local ``checkpoint`` wins over ``hf_model_name``); eval mode.

    The config is ``model_name`` (a registered name or a JSON config path) when given, else the one
    stored in the checkpoint (files written by ``save_averaged_model``), else the released model's,
    else ``mel_24k_base``. A token config (``encodec_24k_*``) gives a ``TokenAudioGenerator``.
    ``pretrained=False`` builds a randomly initialised model of ``model_name`` (no file is read).
    Returns ``(model, config)``. Raises ``ValueError`` (bad names, e.g. a registered config without
    released weights and no ``checkpoint``: the message lists the config / released-model pairs;
    mismatched or unreadable weights), ``FileNotFoundError`` and :class:`HubUnavailableError`.
    """
    if not pretrained:
        if checkpoint is not None:
            raise ValueError("pretrained=False builds a random model: do not pass checkpoint as well")
        config = get_generator_config(model_name or "mel_24k_base")
        model = build_generator(config).eval()
        return (model if device is None else model.to(device)), config
    n_timesteps = None
    default_name = "mel_24k_base"
    released: PretrainedModel | None = None
    if checkpoint is None:
        if hf_model_name is None:
            raise ValueError(
                "get_model needs checkpoint=<path>, hf_model_name=<released name> or pretrained=False. "
                f"Released models: {released_pairs()}"
            )
        info = pretrained_info(hf_model_name)
        if model_name is not None:
            _check_compatible(hf_model_name, info, model_name)
        default_name = info.model_name
        released = info
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
    try:
        extras = load_weights(ckpt, model, strict=True, path=checkpoint)
    except ValueError as exc:
        if released is None:
            raise
        raise ValueError(
            f"{exc}. {hf_model_name} is a {released.model_name} model; released models: {released_pairs()}"
        ) from exc
    model.default_n_timesteps = n_timesteps or extras.get("n_timesteps")
    model.eval()
    if device is not None:
        model.to(device)
    logger.info("loaded %s (%s)", checkpoint, model_name or ("stored config" if stored else default_name))
    return model, config
