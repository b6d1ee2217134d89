"""Spectral front-ends: STFT magnitude, HTK mel and linear triangular filterbanks.

Numerics follow torchaudio's defaults (periodic Hann, centred reflect padding, HTK mel scale,
no filter normalisation) but are implemented on ``torch.stft`` so torchaudio is not needed.
Buffer names (``spectrogram.window``, ``mel_scale.fb``, ``fb``) match the reference state dicts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flow2gan.config import GeneratorConfig

LOG_CLAMP = 1e-7


def hz_to_mel(freq: float | Tensor) -> float | Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    if isinstance(freq, Tensor):
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of :func:`hz_to_mel` (elementwise on a tensor)."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def triangular_filterbank(all_freqs: Tensor, f_pts: Tensor) -> Tensor:
    """Triangular filters with edges ``f_pts[m], f_pts[m+1], f_pts[m+2]`` -> (n_freqs, n_filters)."""
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_filters + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_filters + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def mel_filterbank(n_freqs: int, sampling_rate: int, n_mels: int, f_min: float = 0.0) -> Tensor:
    """HTK mel filterbank without area normalisation, f_max = sr // 2 -> (n_freqs, n_mels)."""
    f_max = float(sampling_rate // 2)
    all_freqs = torch.linspace(0, sampling_rate // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    return triangular_filterbank(all_freqs, mel_to_hz(m_pts))


def linear_filterbank(n_freqs: int, sampling_rate: int, n_filters: int, f_min: float = 0.0) -> Tensor:
    """Equally spaced triangular filters from f_min to sr // 2 -> (n_freqs, n_filters)."""
    f_max = float(sampling_rate // 2)
    all_freqs = torch.linspace(0, sampling_rate // 2, n_freqs)
    f_pts = torch.linspace(f_min, f_max, n_filters + 2)
    return triangular_filterbank(all_freqs, f_pts)


def complex_stft(x: Tensor, n_fft: int, hop_length: int, window: Tensor) -> Tensor:
    """Centred, reflect-padded, one-sided STFT: (..., T) -> complex (..., n_fft // 2 + 1, 1 + T // hop)."""
    shape = x.shape
    spec = torch.stft(
        x.reshape(-1, shape[-1]),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return spec.reshape(shape[:-1] + spec.shape[-2:])


class Spectrogram(nn.Module):
    """Magnitude (power 1) or power (power 2) spectrogram: (..., T) -> (..., n_fft // 2 + 1, frames)."""

    def __init__(self, n_fft: int, hop_length: int, power: float = 1.0) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.power = power
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, x: Tensor) -> Tensor:
        """(..., T) -> (..., n_fft // 2 + 1, 1 + T // hop)."""
        mag = complex_stft(x, self.n_fft, self.hop_length, self.window).abs()
        return mag if self.power == 1.0 else mag.pow(self.power)


def apply_filterbank(spec: Tensor, fb: Tensor) -> Tensor:
    """(..., n_freqs, frames) x (n_freqs, n_filters) -> (..., n_filters, frames)."""
    return torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)


class FilterbankScale(nn.Module):
    """Projects a spectrogram onto a filterbank held in buffer ``fb`` (n_freqs, n_filters)."""

    def __init__(self, fb: Tensor) -> None:
        super().__init__()
        self.register_buffer("fb", fb)

    def forward(self, spec: Tensor) -> Tensor:
        """(..., n_freqs, frames) -> (..., n_filters, frames)."""
        return apply_filterbank(spec, self.fb)


class MelSpectrogram(nn.Module):
    """HTK mel spectrogram (torchaudio defaults, power 1): (..., T) -> (..., n_mels, 1 + T // hop)."""

    def __init__(
        self,
        sampling_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        center: bool = True,
        power: float = 1.0,
    ) -> None:
        super().__init__()
        if not center:
            raise ValueError("only center=True is supported (as in the reference front-end)")
        self.sampling_rate = sampling_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.spectrogram = Spectrogram(n_fft, hop_length, power)
        self.mel_scale = FilterbankScale(mel_filterbank(n_fft // 2 + 1, sampling_rate, n_mels))

    def forward(self, x: Tensor) -> Tensor:
        """(..., T) -> (..., n_mels, 1 + T // hop)."""
        return self.mel_scale(self.spectrogram(x))


class LogMelSpectrogram(MelSpectrogram):
    """Natural-log mel spectrogram clamped at 1e-7, the generator's conditioning input.

    (B, T) or (T,) -> (B, n_mels, 1 + T // hop) or (n_mels, frames). Audio shorter than
    ``n_fft // 2 + 1`` samples cannot be reflect-padded and raises ``ValueError``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(..., T) -> (..., n_mels, 1 + T // hop) log-mel."""
        if x.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"audio of {x.shape[-1]} samples is too short for the mel front-end "
                f"(needs more than n_fft // 2 = {self.n_fft // 2} samples)"
            )
        return torch.log(torch.clamp(super().forward(x), min=LOG_CLAMP))


class LinearFilterSpectrogram(nn.Module):
    """Power spectrogram on linear triangular filters (FM loss): (B, T) -> (B, n_filters, frames)."""

    def __init__(self, sampling_rate: int, n_fft: int, hop_length: int, n_filters: int = 256) -> None:
        super().__init__()
        self.register_buffer("fb", linear_filterbank(n_fft // 2 + 1, sampling_rate, n_filters))
        self.spectrogram = Spectrogram(n_fft, hop_length, power=2.0)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T) -> (B, n_filters, 1 + T // hop)."""
        return apply_filterbank(self.spectrogram(x), self.fb)


def mel_frontend(config: GeneratorConfig) -> LogMelSpectrogram:
    """The log-mel front-end a generator config is conditioned on (SPEC 3.1): (B, T) -> (B, n_mels, F).

    ``LogMelSpectrogram(sampling_rate, mel_n_fft, mel_hop_length, n_mels)``, centred, power 1.
    """
    return LogMelSpectrogram(config.sampling_rate, config.mel_n_fft, config.mel_hop_length, config.n_mels)
