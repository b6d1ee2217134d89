"""Stage-2 GAN: hinge / feature-matching / multi-scale mel losses and the generator + discriminators wrapper.

The wrapper's state dict is ``generator.*``, ``discriminator.0.*`` (MPD), ``discriminator.1.*`` (MRD)
and ``mel_recon_modules.{k}.spectrogram.window`` / ``.mel_scale.fb``, as in the reference checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from flow2gan.cli import check_bounds
from flow2gan.config import ConfigMapping
from flow2gan.features import LOG_CLAMP, MelSpectrogram
from flow2gan.models.discriminators import (
    MPD_CHANNELS,
    MRD_CHANNELS,
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
)
from flow2gan.models.spectral_losses import (
    PERIODICITY_PEAK_WEIGHT,
    PERIODICITY_WINDOW_S,
    PHASE_LOSS_N_FFTS,
    STFT_LOSS_N_FFTS,
    periodicity_loss,
    phase_derivative_loss,
    stft_magnitude_loss,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GANConfig(ConfigMapping):
    """Scales ``(n_fft, n_mels)`` of the mel reconstruction loss (hop = n_fft // 4); discriminator widths.

    The fields are the keyword arguments of :class:`GAN`: ``GAN(generator, **get_gan_config(name))``.
    """

    mel_recon_n_ffts: tuple[int, ...]
    mel_recon_n_mels: tuple[int, ...]
    mpd_channels: tuple[int, ...] = MPD_CHANNELS
    mrd_channels: int = MRD_CHANNELS

    def __post_init__(self) -> None:
        for name in ("mel_recon_n_ffts", "mel_recon_n_mels", "mpd_channels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.mel_recon_n_ffts) != len(self.mel_recon_n_mels) or not self.mel_recon_n_ffts:
            raise ValueError(
                f"mel_recon_n_ffts {self.mel_recon_n_ffts} and mel_recon_n_mels {self.mel_recon_n_mels} "
                "must be non-empty and of equal length"
            )


GAN_CONFIGS: dict[str, GANConfig] = {
    "gan_multi_scale_mel_recon": GANConfig(
        mel_recon_n_ffts=(32, 64, 128, 256, 512, 1024, 2048),
        mel_recon_n_mels=(5, 10, 20, 40, 80, 160, 320),
    ),
    "gan_single_scale_mel_recon": GANConfig(mel_recon_n_ffts=(1024,), mel_recon_n_mels=(100,)),
    # The reference losses with much narrower discriminators (MPD 0.16 M instead of 41 M parameters,
    # MRD 8 instead of 32 channels): for CPU smoke runs and the mini recipe, not for quality.
    "gan_small_multi_scale_mel_recon": GANConfig(
        mel_recon_n_ffts=(32, 64, 128, 256, 512, 1024, 2048),
        mel_recon_n_mels=(5, 10, 20, 40, 80, 160, 320),
        mpd_channels=(8, 16, 32, 64, 64),
        mrd_channels=8,
    ),
}


def get_gan_config(name: str) -> GANConfig:
    """A named GAN-stage configuration (e.g. ``gan_multi_scale_mel_recon``, the reference default)."""
    if name not in GAN_CONFIGS:
        raise KeyError(f"unknown GAN config {name!r}; known: {sorted(GAN_CONFIGS)}")
    return GAN_CONFIGS[name]


def _weight(default: float, help: str) -> Any:
    """A loss-weight field: a finite number >= 0 (checked by ``check_bounds``) with its flag's help text."""
    return field(default=default, metadata={"min": 0, "help": help})


@dataclass(frozen=True)
class GANLossScales:
    """Weights of the discriminator and generator loss terms (reference CLI defaults; ``help``: flag text).

    All weights must be finite and >= 0 and at least one discriminator hinge weight > 0 (``ValueError``;
    stage 2 without discriminators is ``--mel-only-batches``). A discriminator whose three weights are all 0
    is not run; one that is trained but not used by the generator, or used but not trained (a frozen
    random discriminator), is logged as a warning.
    """

    disc_loss_mp_scale: float = _weight(
        1.0,
        "weight of the MPD hinge loss in loss_d (0 with both MPD generator weights: no MPD)",
    )
    disc_loss_mr_scale: float = _weight(
        0.1,
        "weight of the MRD hinge loss in loss_d (0 with both MRD generator weights: no MRD)",
    )
    gen_loss_mp_scale: float = _weight(1.0, "weight of the MPD adversarial loss")
    gen_loss_mr_scale: float = _weight(0.1, "weight of the MRD adversarial loss")
    feat_map_loss_mp_scale: float = _weight(1.0, "weight of the MPD feature-matching loss")
    feat_map_loss_mr_scale: float = _weight(0.1, "weight of the MRD feature-matching loss")
    mel_recon_loss_scale: float = _weight(45.0, "weight of the multi-scale log-mel L1 loss in loss_g")
    phase_loss_scale: float = _weight(
        0.0,
        "weight of the STFT phase-derivative loss in loss_g (a flow2gan option for CPU "
        "budgets; 0 = off, the paper's loss)",
    )
    stft_loss_scale: float = _weight(
        0.0,
        "weight of the linear-STFT spectral-convergence + log-magnitude loss in loss_g "
        "(a flow2gan option for CPU budgets; 0 = off, the paper's loss)",
    )
    phase_loss_n_ffts: tuple[int, ...] = field(
        default=PHASE_LOSS_N_FFTS,
        metadata={"help": "STFT sizes of the phase-derivative loss (hop n_fft / 4)"},
    )
    phase_loss_weight_power: float = _weight(
        1.0,
        "exponent of the reference's |X[k] X[k-1]| weighting the phase-derivative loss "
        "(1: by power, 0.5: by magnitude)",
    )
    phase_loss_max_freq: float = _weight(
        0.0,
        "highest frequency (Hz) whose bins the phase-derivative loss compares (0: all bins)",
    )
    periodicity_loss_scale: float = _weight(
        0.0,
        "weight of the autocorrelation periodicity loss in loss_g (a flow2gan option for CPU "
        "budgets; 0 = off, the paper's loss)",
    )
    periodicity_peak_weight: float = _weight(
        PERIODICITY_PEAK_WEIGHT,
        "extra weight of the periodicity loss at the reference's pitch period, used when "
        "--periodicity-loss-scale > 0 (0: the mean over pitch lags alone)",
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        if not (self.trains("mp") or self.trains("mr")):
            raise ValueError(
                "--disc-loss-mp-scale and --disc-loss-mr-scale are both 0: no discriminator would be trained "
                "(for stage 2 without discriminators use --mel-only-batches)"
            )
        for key, name in (("mp", "MPD"), ("mr", "MRD")):
            if self.trains(key) != self.guides_generator(key):
                state = (
                    "trained but never used by the generator"
                    if self.trains(key)
                    else "used but never trained"
                )
                weights = {n: getattr(self, f"{n}_loss_{key}_scale") for n in ("disc", "gen", "feat_map")}
                logger.warning("the %s is %s (loss weights %s)", name, state, weights)
        object.__setattr__(self, "phase_loss_n_ffts", tuple(int(n) for n in self.phase_loss_n_ffts))
        if not self.phase_loss_n_ffts or min(self.phase_loss_n_ffts) < 4:
            raise ValueError(f"--phase-loss-n-ffts must be STFT sizes >= 4, got {self.phase_loss_n_ffts}")

    def crop_bounds(self, sampling_rate: int) -> dict[str, int]:
        """Samples a training crop must exceed for each enabled flow2gan loss, by what needs them.

        Centred STFTs need more than ``n_fft // 2`` samples, the periodicity loss more than its window
        (:mod:`flow2gan.models.spectral_losses` raises ``ValueError`` otherwise).
        """
        phase_n_fft, window = max(self.phase_loss_n_ffts), round(PERIODICITY_WINDOW_S * sampling_rate)
        bounds = {
            f"the phase loss's {phase_n_fft}-sample STFT (--phase-loss-n-ffts)": (
                self.phase_loss_scale,
                phase_n_fft // 2,
            ),
            f"the STFT loss's {max(STFT_LOSS_N_FFTS)}-sample STFT (--stft-loss-scale)": (
                self.stft_loss_scale,
                max(STFT_LOSS_N_FFTS) // 2,
            ),
            f"the periodicity loss's {window}-sample window (--periodicity-loss-scale)": (
                self.periodicity_loss_scale,
                window,
            ),
        }
        return {what: bound for what, (scale, bound) in bounds.items() if scale > 0}

    def trains(self, key: str) -> bool:
        """Whether discriminator ``key`` ("mp" = MPD, "mr" = MRD) has a hinge loss in loss_d."""
        return getattr(self, f"disc_loss_{key}_scale") > 0

    def guides_generator(self, key: str) -> bool:
        """Whether discriminator ``key`` has an adversarial or feature-matching term in loss_g."""
        return getattr(self, f"gen_loss_{key}_scale") > 0 or getattr(self, f"feat_map_loss_{key}_scale") > 0


def discriminator_loss(scores_real: list[Tensor], scores_fake: list[Tensor]) -> Tensor:
    """Hinge loss Σ_k [mean(relu(1 − real_k)) + mean(relu(1 + fake_k))] over any-shape score tensors -> ()."""
    loss = scores_real[0].new_zeros(())
    for real, fake in zip(scores_real, scores_fake, strict=True):
        loss = loss + (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
    return loss


def generator_loss(scores_fake: list[Tensor]) -> Tensor:
    """Adversarial hinge loss Σ_k mean(relu(1 − fake_k)) -> ()."""
    loss = scores_fake[0].new_zeros(())
    for fake in scores_fake:
        loss = loss + torch.relu(1 - fake).mean()
    return loss


def feature_matching_loss(fmaps_real: list[list[Tensor]], fmaps_fake: list[list[Tensor]]) -> Tensor:
    """Σ_d Σ_l mean|real_dl.detach() − fake_dl| over nested lists of feature maps -> ()."""
    loss = fmaps_fake[0][0].new_zeros(())
    for maps_real, maps_fake in zip(fmaps_real, fmaps_fake, strict=True):
        for real, fake in zip(maps_real, maps_fake, strict=True):
            loss = loss + torch.mean(torch.abs(real.detach() - fake))
    return loss


def build_mel_recon_modules(
    sampling_rate: int, n_ffts: tuple[int, ...], n_mels: tuple[int, ...]
) -> nn.ModuleList:
    """Magnitude HTK mel spectrograms, one per scale, hop n_fft // 4: ModuleList of (B, T) -> (B, M, F)."""
    return nn.ModuleList(
        MelSpectrogram(sampling_rate, n_fft, n_fft // 4, m) for n_fft, m in zip(n_ffts, n_mels, strict=True)
    )


def clamped_log_mel(mel_module: nn.Module, audio: Tensor) -> Tensor:
    """log(max(mel, 1e-7)): (B, T) -> (B, n_mels, 1 + T // hop)."""
    return torch.log(torch.clamp(mel_module(audio), min=LOG_CLAMP))


def mel_recon_per_scale(mel_modules: nn.ModuleList, real: Tensor, fake: Tensor) -> list[Tensor]:
    """Per-scale L1 between clamped log-mels of real and fake (B, T) -> list of () tensors."""
    return [torch.mean(torch.abs(clamped_log_mel(m, real) - clamped_log_mel(m, fake))) for m in mel_modules]


class GAN(nn.Module):
    """Generator + [MPD, MRD] + multi-scale mel loss; alternating D / G training steps (§4.2).

    ``generator`` must provide ``infer(cond, audio_lens=None, n_timesteps=1, clamp_pred=False)``
    returning a waveform (B, T) with ``T = max(audio_lens)`` when lengths are given.
    """

    def __init__(
        self,
        generator: nn.Module,
        mel_recon_n_ffts: tuple[int, ...] = GAN_CONFIGS["gan_multi_scale_mel_recon"].mel_recon_n_ffts,
        mel_recon_n_mels: tuple[int, ...] = GAN_CONFIGS["gan_multi_scale_mel_recon"].mel_recon_n_mels,
        sampling_rate: int | None = None,
        loss_scales: GANLossScales | None = None,
        mpd_channels: tuple[int, ...] = MPD_CHANNELS,
        mrd_channels: int = MRD_CHANNELS,
    ) -> None:
        super().__init__()
        config = GANConfig(mel_recon_n_ffts, mel_recon_n_mels, mpd_channels, mrd_channels)
        if sampling_rate is None:
            sampling_rate = generator.config.sampling_rate
        self.sampling_rate = sampling_rate
        self.loss_scales = loss_scales if loss_scales is not None else GANLossScales()
        self.generator = generator
        self.discriminator = nn.ModuleList(
            [
                MultiPeriodDiscriminator(channels=config.mpd_channels),
                MultiResolutionDiscriminator(channels=config.mrd_channels),
            ]
        )
        self.mel_recon_modules = build_mel_recon_modules(
            sampling_rate, config.mel_recon_n_ffts, config.mel_recon_n_mels
        )

    @classmethod
    def from_config(
        cls,
        generator: nn.Module,
        gan_config: GANConfig | str,
        sampling_rate: int | None = None,
        loss_scales: GANLossScales | None = None,
    ) -> GAN:
        """Builds the wrapper from a :class:`GANConfig` or a registry name."""
        if isinstance(gan_config, str):
            gan_config = get_gan_config(gan_config)
        return cls(
            generator,
            gan_config.mel_recon_n_ffts,
            gan_config.mel_recon_n_mels,
            sampling_rate,
            loss_scales,
            gan_config.mpd_channels,
            gan_config.mrd_channels,
        )

    @property
    def mpd(self) -> MultiPeriodDiscriminator:
        """The multi-period discriminator (``discriminator.0``)."""
        return self.discriminator[0]

    @property
    def mrd(self) -> MultiResolutionDiscriminator:
        """The multi-resolution discriminator (``discriminator.1``)."""
        return self.discriminator[1]

    def mel_recon_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """Σ over scales of mean |log mel(real) − log mel(fake)|: (B, T), (B, T) -> ()."""
        per_scale = mel_recon_per_scale(self.mel_recon_modules, real, fake)
        loss = per_scale[0]
        for value in per_scale[1:]:
            loss = loss + value
        return loss

    def reconstruction_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the reconstruction terms and the terms: (B, T) x 2 -> ((), {name: ()}).

        ``mel_recon_loss`` always; ``phase_loss`` / ``stft_loss`` / ``periodicity_loss``
        (:mod:`flow2gan.models.spectral_losses`, flow2gan options) only when their scales are > 0.
        """
        scales = self.loss_scales
        terms = {"mel_recon_loss": self.mel_recon_loss(real, fake)}
        loss = scales.mel_recon_loss_scale * terms["mel_recon_loss"]
        if scales.phase_loss_scale > 0:
            terms["phase_loss"] = phase_derivative_loss(
                real,
                fake,
                scales.phase_loss_n_ffts,
                scales.phase_loss_weight_power,
                scales.phase_loss_max_freq or None,
                self.sampling_rate,
            )
            loss = loss + scales.phase_loss_scale * terms["phase_loss"]
        if scales.stft_loss_scale > 0:
            terms["stft_loss"] = stft_magnitude_loss(real, fake)
            loss = loss + scales.stft_loss_scale * terms["stft_loss"]
        if scales.periodicity_loss_scale > 0:
            terms["periodicity_loss"] = periodicity_loss(
                real, fake, self.sampling_rate, peak_weight=scales.periodicity_peak_weight
            )
            loss = loss + scales.periodicity_loss_scale * terms["periodicity_loss"]
        return loss, terms

    def _generate(self, audio: Tensor, mel: Tensor, audio_lens: Tensor | None, n_timesteps: int) -> Tensor:
        """Unclamped N-step generator output (B, T), checked against the real batch's shape."""
        fake = self.generator.infer(
            cond=mel, audio_lens=audio_lens, n_timesteps=n_timesteps, clamp_pred=False
        )
        if fake.shape != audio.shape:
            raise ValueError(
                f"generator output {tuple(fake.shape)} does not match audio {tuple(audio.shape)}"
            )
        return fake

    def set_step_modes(self, discriminator_step: bool) -> None:
        """Train/eval modes of a training step; the training stage calls this before :meth:`forward`.

        As in the reference: a D step runs the generator in eval and the discriminators in train mode, a
        G step the generator in train and the discriminators in eval mode.
        """
        self.generator.train(not discriminator_step)
        self.discriminator.train(discriminator_step)

    def discriminator_forward(
        self, audio: Tensor, mel: Tensor, audio_lens: Tensor | None, n_timesteps: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """D step: generator under no_grad (modes: :meth:`set_step_modes`) -> (loss_d, info).

        A discriminator whose ``disc_loss_*_scale`` is 0 is not run (its hinge loss is reported as 0).
        """
        with torch.no_grad():
            fake = self._generate(audio, mel, audio_lens, n_timesteps)
        scales = self.loss_scales
        zero = fake.new_zeros(())
        loss_mp = discriminator_loss(*self.mpd(audio, fake)[:2]) if scales.trains("mp") else zero
        loss_mr = discriminator_loss(*self.mrd(audio, fake)[:2]) if scales.trains("mr") else zero
        loss_d = scales.disc_loss_mp_scale * loss_mp + scales.disc_loss_mr_scale * loss_mr
        info = {"loss_d": loss_d, "disc_loss_mp": loss_mp, "disc_loss_mr": loss_mr}
        return loss_d, {k: v.detach() for k, v in info.items()}

    def generator_forward(
        self,
        audio: Tensor,
        mel: Tensor,
        audio_lens: Tensor | None,
        n_timesteps: int,
        adversarial: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """G step: gradients through all generator steps (modes: :meth:`set_step_modes`) -> (loss_g, info).

        ``adversarial=False``: the reconstruction terms alone (:meth:`reconstruction_loss`), without
        running the discriminators; a discriminator whose adversarial and feature-matching scales are
        both 0 is not run either (its terms are reported as 0).
        """
        fake = self._generate(audio, mel, audio_lens, n_timesteps)
        scales = self.loss_scales
        info: dict[str, Tensor] = {}
        loss_g = fake.new_zeros(())
        if adversarial:
            for key, disc in (("mp", self.mpd), ("mr", self.mrd)):
                info[f"gen_loss_{key}"] = info[f"feat_map_loss_{key}"] = fake.new_zeros(())
                if scales.guides_generator(key):
                    _, scores_fake, fmaps_real, fmaps_fake = disc(audio, fake)
                    info[f"gen_loss_{key}"] = generator_loss(scores_fake)
                    info[f"feat_map_loss_{key}"] = feature_matching_loss(fmaps_real, fmaps_fake)
            loss_g = (
                scales.gen_loss_mp_scale * info["gen_loss_mp"]
                + scales.gen_loss_mr_scale * info["gen_loss_mr"]
                + scales.feat_map_loss_mp_scale * info["feat_map_loss_mp"]
                + scales.feat_map_loss_mr_scale * info["feat_map_loss_mr"]
            )
        reconstruction, terms = self.reconstruction_loss(audio, fake)
        info.update(terms)
        loss_g = loss_g + reconstruction
        info = {"loss_g": loss_g, **info}
        return loss_g, {k: v.detach() for k, v in info.items()}

    def forward(
        self,
        audio: Tensor,
        mel: Tensor,
        audio_lens: Tensor | None,
        n_timesteps: int,
        discriminator_step: bool,
        adversarial: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Dispatches to :meth:`discriminator_forward` or :meth:`generator_forward` (for DDP wrapping)."""
        if discriminator_step:
            return self.discriminator_forward(audio, mel, audio_lens, n_timesteps)
        return self.generator_forward(audio, mel, audio_lens, n_timesteps, adversarial)
