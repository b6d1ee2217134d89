"""Generator configurations (a frozen dataclass with the reference's constructor keys, and a registry)
and the released models of the Hugging Face repo (SPEC 6.1)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HF_REPO_ID = "k2-fsa/Flow2GAN"


class ConfigMapping(Mapping):
    """Read-only dict view of a frozen dataclass config, for scripts written against the reference's
    attribute dicts: ``cfg["n_mels"]``, ``cfg.keys()``, ``Class(**cfg)``; unknown keys raise ``KeyError``."""

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(dataclasses.fields(self))

    def keys(self) -> list[str]:  # type: ignore[override]
        """Field names in declaration order."""
        return [f.name for f in dataclasses.fields(self)]


@dataclass(frozen=True)
class GeneratorConfig(ConfigMapping):
    """All constructor arguments of the mel-conditioned generator (reference key names).

    Attribute and item access both work (``cfg.n_mels == cfg["n_mels"]``), and
    ``MelAudioGenerator(**cfg)`` builds the model as in the reference.
    """

    sampling_rate: int = 24000
    n_mels: int = 100
    mel_n_fft: int = 1024
    mel_hop_length: int = 256
    n_ffts: tuple[int, ...] = (512, 256, 128)
    hop_lengths: tuple[int, ...] = (256, 128, 64)
    channels: tuple[int, ...] = (768, 512, 384)
    time_embed_channels: int = 512
    hidden_factor: int = 3
    conv_kernel_sizes: tuple[int, ...] = (7, 7, 7)
    num_layers: tuple[int, ...] = (8, 8, 8)
    use_cond_encoder: bool = True
    cond_enc_channels: int = 512
    cond_enc_hidden_factor: int = 3
    cond_enc_conv_kernel_size: int = 7
    cond_enc_num_layers: int = 4
    residual_scale: float = 1.0
    init_noise_scale: float = 0.1
    pred_x1: bool = True
    branch_reduction: str = "mean"
    spec_scaling_loss: bool = True
    loss_n_filters: int = 256
    loss_n_fft: int = 1024
    loss_hop_length: int = 256
    loss_power: float = 0.5
    loss_eps: float = 1e-7
    loss_scale_min: float = 0.01
    loss_scale_max: float = 100.0
    branch_dropout: float = 0.05
    max_add_noise_scale: float = 0.0
    # flow2gan extension (not in the paper; off in its configs): magnitudes from the mel envelope,
    # see flow2gan.models.envelope.
    envelope_precond: bool = False

    def __post_init__(self) -> None:
        for name in ("n_ffts", "hop_lengths", "channels", "conv_kernel_sizes", "num_layers"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        n = len(self.n_ffts)
        for name in ("hop_lengths", "channels", "conv_kernel_sizes", "num_layers"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have one entry per branch ({n}), got {getattr(self, name)}")
        for hop in self.hop_lengths:
            if self.mel_hop_length % hop:
                raise ValueError(
                    f"mel_hop_length {self.mel_hop_length} is not a multiple of branch hop {hop}"
                )
        if self.branch_reduction not in ("mean", "sum"):
            raise ValueError(f"branch_reduction must be 'mean' or 'sum', got {self.branch_reduction!r}")

    @property
    def min_mel_frames(self) -> int:
        """Fewest mel frames the generator accepts: every branch STFT needs more than n_fft / 2 samples."""
        return max(self.n_ffts) // 2 // self.mel_hop_length + 1

    def to_dict(self) -> dict[str, Any]:
        """The reference constructor arguments as a JSON-friendly dict (lists for tuples)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self, **changes: Any) -> GeneratorConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Build from a dict of reference keys (or ``{"config": {...}}``); unknown keys are an error."""
        if "config" in data and isinstance(data["config"], dict):
            data = data["config"]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown generator config keys: {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class TokenGeneratorConfig(GeneratorConfig):
    """Generator conditioned on EnCodec codes instead of a log-mel (``flow2gan.models.token_generator``).

    The condition fields keep the reference names with a token meaning: ``n_mels`` is the width of
    the code vectors fed to the condition encoder (= ``codebook_dim``) and ``mel_hop_length`` the
    samples per code frame (320 at 24 kHz, 75 frames/s); ``mel_n_fft`` is unused. ``bandwidths`` (kbps)
    are the ones the model serves, each with its learned embedding; bandwidth ``b`` uses the first
    ``n_codebooks(b)`` codebooks of ``codebook_size`` entries.
    """

    n_mels: int = 128
    mel_hop_length: int = 320
    codebook_size: int = 1024
    codebook_dim: int = 128
    bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "bandwidths", tuple(float(b) for b in self.bandwidths))
        if self.n_mels != self.codebook_dim:
            raise ValueError(f"n_mels ({self.n_mels}) must equal codebook_dim ({self.codebook_dim})")
        if self.max_add_noise_scale:
            raise ValueError("max_add_noise_scale must be 0 for a token-conditioned generator")
        if self.envelope_precond:
            raise ValueError("envelope_precond needs a mel condition; token-conditioned generators have none")
        counts = [self.n_codebooks(b) for b in self.bandwidths]
        if not self.bandwidths or len(set(counts)) != len(counts):
            raise ValueError(f"bandwidths {self.bandwidths} must be non-empty with distinct codebook counts")

    @property
    def frame_rate(self) -> float:
        """Code frames per second (75 for 24 kHz, hop 320)."""
        return self.sampling_rate / self.mel_hop_length

    def n_codebooks(self, bandwidth: float) -> int:
        """Codebooks used at ``bandwidth`` kbps: ``floor(bandwidth * 1000 / (frame_rate * log2(size)))``."""
        return max(1, math.floor(bandwidth * 1000 / (self.frame_rate * math.log2(self.codebook_size))))

    @property
    def max_codebooks(self) -> int:
        """Codebooks of the largest bandwidth (16 at 12 kbps): the code vectors the model stores."""
        return max(self.n_codebooks(b) for b in self.bandwidths)


_24K_BASE = GeneratorConfig()
_SMALL = dict(
    channels=(96, 64, 48),
    time_embed_channels=64,
    hidden_factor=2,
    num_layers=(2, 2, 2),
    cond_enc_channels=64,
    cond_enc_hidden_factor=2,
    cond_enc_num_layers=2,
)
# EnCodec 24 kHz frames are 320 samples (75 Hz). The branches keep the mel models' ratios to the
# condition hop (hops 1, 1/2, 1/4 of it; n_fft = 2 x hop): 640/320, 320/160, 160/80. The FM loss
# spectrogram works on the audio and stays that of the 24 kHz mel model (1024 / 256).
_ENCODEC_24K_BASE = TokenGeneratorConfig(n_ffts=(640, 320, 160), hop_lengths=(320, 160, 80))

CONFIGS: dict[str, GeneratorConfig] = {
    "mel_24k_base": _24K_BASE,
    "mel_44k_128band_512x_base": _24K_BASE.replace(
        sampling_rate=44100,
        n_mels=128,
        mel_n_fft=2048,
        mel_hop_length=512,
        n_ffts=(1024, 512, 256),
        hop_lengths=(512, 256, 128),
        loss_n_fft=2048,
        loss_hop_length=512,
    ),
    # Same structure as mel_24k_base, small enough to train on a laptop CPU (mini recipe, smoke runs).
    "mel_24k_small": _24K_BASE.replace(**_SMALL),
    # mel_24k_small with mel-envelope preconditioning (flow2gan.models.envelope): what CPU-budget
    # training uses (learning benchmark, mini and LJ Speech recipes).
    "mel_24k_small_envelope": _24K_BASE.replace(**_SMALL, envelope_precond=True),
    "encodec_24k_base": _ENCODEC_24K_BASE,
    # encodec_24k_base with the widths and depths of mel_24k_small (CPU scale).
    "encodec_24k_small": _ENCODEC_24K_BASE.replace(**_SMALL),
}


def get_generator_config(name: str) -> GeneratorConfig:
    """A registered config by name, or one read from a JSON file path (top level or under ``config``).

    A JSON config with a ``bandwidths`` key is a :class:`TokenGeneratorConfig`. Raises
    ``FileNotFoundError`` for a missing ``.json`` file and ``ValueError`` for an unknown name or a file
    that is not a JSON config (the message names the file).
    """
    if name in CONFIGS:
        return CONFIGS[name]
    path = Path(name)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            return config_from_dict(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as exc:  # JSON syntax, encoding, a field of a bad type
            raise ValueError(f"config file {path}: {exc}") from exc
    raise ValueError(f"unknown model name {name!r}; registered: {sorted(CONFIGS)} (or pass a JSON file path)")


def config_from_dict(data: dict[str, Any]) -> GeneratorConfig:
    """A config from its dict (top level or under ``config``); one with ``bandwidths`` is a token config.

    ``ValueError`` if ``data`` is not a dict.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a config is a JSON object of fields, got {type(data).__name__}")
    inner = data["config"] if isinstance(data.get("config"), dict) else data
    cls = TokenGeneratorConfig if "bandwidths" in inner else GeneratorConfig
    return cls.from_dict(inner)


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


def released_pairs() -> str:
    """Which ``hf_model_name`` goes with which ``model_name``, one clause per config, for error messages."""
    by_config: dict[str, list[str]] = {}
    for name, info in HF_MODELS.items():
        by_config.setdefault(info.model_name, []).append(name)
    return "; ".join(f"model_name={cfg!r}: {', '.join(names)}" for cfg, names in by_config.items())


def pretrained_info(hf_model_name: str) -> PretrainedModel:
    """Look up a released model name; an unknown name is a ``ValueError`` listing the valid ones."""
    if hf_model_name not in HF_MODELS:
        raise ValueError(f"unknown hf_model_name {hf_model_name!r}; released models: {released_pairs()}")
    return HF_MODELS[hf_model_name]
