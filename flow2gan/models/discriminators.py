"""Stage-2 discriminators: multi-period (MPD) and multi-resolution (MRD), Vocos layout without weight norm.

Both multi-discriminators take ``(y, y_hat)`` waveforms ``(B, T)`` and return
``(scores_real, scores_fake, fmaps_real, fmaps_fake)``, each a list over sub-discriminators.
State-dict names follow the reference: ``discriminators.{i}.convs.{l}`` / ``conv_post`` (MPD) and
``discriminators.{r}.spec_fn.window`` / ``band_convs.{b}.{l}`` / ``conv_post`` (MRD).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flow2gan.features import complex_stft

LRELU_SLOPE = 0.1
MPD_PERIODS = (2, 3, 5, 7, 11)
MPD_CHANNELS = (32, 128, 512, 1024, 1024)
MRD_CHANNELS = 32
MRD_RESOLUTIONS = (2048, 1024, 512)
MRD_BAND_EDGES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
MRD_PEAK = 0.8
MRD_PEAK_EPS = 1e-9

DiscriminatorOutput = tuple[list[Tensor], list[Tensor], list[list[Tensor]], list[list[Tensor]]]


def _run_pair(subs: nn.ModuleList, y: Tensor, y_hat: Tensor) -> DiscriminatorOutput:
    """Runs every sub-discriminator on the real then the fake batch and collects scores and fmaps."""
    scores_real, scores_fake, fmaps_real, fmaps_fake = [], [], [], []
    for sub in subs:
        score_r, fmap_r = sub(y)
        score_f, fmap_f = sub(y_hat)
        scores_real.append(score_r)
        scores_fake.append(score_f)
        fmaps_real.append(fmap_r)
        fmaps_fake.append(fmap_f)
    return scores_real, scores_fake, fmaps_real, fmaps_fake


class PeriodDiscriminator(nn.Module):
    """One MPD branch: (B, T) folded to (B, 1, T/p, p) -> score (B, H·p) and 5 feature maps."""

    def __init__(self, period: int, channels: tuple[int, ...] = MPD_CHANNELS) -> None:
        super().__init__()
        self.period = period
        in_channels = (1,) + tuple(channels[:-1])
        strides = (3,) * (len(channels) - 1) + (1,)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=(5, 1), stride=(s, 1), padding=(2, 0))
            for c_in, c_out, s in zip(in_channels, channels, strides, strict=True)
        )
        self.conv_post = nn.Conv2d(channels[-1], 1, kernel_size=(3, 1), padding=(1, 0))

    def fold(self, x: Tensor) -> Tensor:
        """(B, T) -> (B, 1, ceil(T/p), p), reflect-padding the right end to a multiple of p."""
        x = x.unsqueeze(1)
        remainder = x.shape[-1] % self.period
        if remainder:
            x = F.pad(x, (0, self.period - remainder), mode="reflect")
        batch, channels, length = x.shape
        return x.view(batch, channels, length // self.period, self.period)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, T) -> score (B, H·p) and fmaps [after convs.1..4 activations, conv_post output]."""
        h = self.fold(x)
        fmaps = []
        for i, conv in enumerate(self.convs):
            h = F.leaky_relu(conv(h), LRELU_SLOPE)
            if i > 0:
                fmaps.append(h)
        h = self.conv_post(h)
        fmaps.append(h)
        return torch.flatten(h, 1, -1), fmaps


class MultiPeriodDiscriminator(nn.Module):
    """Multi-period discriminator: ``forward(y, y_hat)`` on (B, T) waveforms -> per-period lists."""

    def __init__(
        self, periods: tuple[int, ...] = MPD_PERIODS, channels: tuple[int, ...] = MPD_CHANNELS
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, y: Tensor, y_hat: Tensor) -> DiscriminatorOutput:
        """(B, T), (B, T) -> (scores_real, scores_fake, fmaps_real, fmaps_fake), 5 periods each."""
        return _run_pair(self.discriminators, y, y_hat)


class ComplexSpectrogram(nn.Module):
    """Centred complex STFT as 2 real channels: (B, T) -> (B, 2, frames, n_fft // 2 + 1)."""

    def __init__(self, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, x: Tensor) -> Tensor:
        """(B, T) -> (B, 2 [re, im], 1 + T // hop, n_fft // 2 + 1)."""
        spec = torch.view_as_real(complex_stft(x, self.n_fft, self.hop_length, self.window))
        return spec.permute(0, 3, 2, 1)


def band_bins(window_length: int, edges: tuple[float, ...] = MRD_BAND_EDGES) -> list[tuple[int, int]]:
    """Frequency-bin ranges ``[int(lo·n_bins), int(hi·n_bins))`` of the MRD bands, n_bins = w/2 + 1."""
    n_bins = window_length // 2 + 1
    cuts = [int(f * n_bins) for f in edges]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _band_stack(channels: int) -> nn.ModuleList:
    """The 5 convolutions of one MRD band: 2 -> C (3,9); C -> C (3,9) stride 2 in freq (x3); C -> C (3,3)."""
    return nn.ModuleList(
        [
            nn.Conv2d(2, channels, kernel_size=(3, 9), padding=(1, 4)),
            nn.Conv2d(channels, channels, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(channels, channels, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(channels, channels, kernel_size=(3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(channels, channels, kernel_size=(3, 3), padding=(1, 1)),
        ]
    )


def normalize_for_mrd(x: Tensor) -> Tensor:
    """Removes the per-utterance mean and scales the peak to 0.8: (B, T) -> (B, T)."""
    x = x - x.mean(dim=-1, keepdim=True)
    return MRD_PEAK * x / (x.abs().amax(dim=-1, keepdim=True) + MRD_PEAK_EPS)


class ResolutionDiscriminator(nn.Module):
    """One MRD branch: (B, T) -> score (B, 1, frames, ΣF') and 21 feature maps (4 per band + post)."""

    def __init__(self, window_length: int, channels: int = MRD_CHANNELS) -> None:
        super().__init__()
        self.window_length = window_length
        self.spec_fn = ComplexSpectrogram(window_length, window_length // 4)
        self.bands = band_bins(window_length)
        self.band_convs = nn.ModuleList(_band_stack(channels) for _ in self.bands)
        self.conv_post = nn.Conv2d(channels, 1, kernel_size=(3, 3), padding=(1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, T) -> score (B, 1, frames, ΣF') and fmaps [band b layers 1..4 for b = 0..4, conv_post]."""
        spec = self.spec_fn(normalize_for_mrd(x))
        fmaps = []
        band_outputs = []
        for (lo, hi), stack in zip(self.bands, self.band_convs, strict=True):
            h = spec[..., lo:hi]
            for i, conv in enumerate(stack):
                h = F.leaky_relu(conv(h), LRELU_SLOPE)
                if i > 0:
                    fmaps.append(h)
            band_outputs.append(h)
        score = self.conv_post(torch.cat(band_outputs, dim=-1))
        fmaps.append(score)
        return score, fmaps


class MultiResolutionDiscriminator(nn.Module):
    """Multi-resolution (multi-band complex STFT) discriminator: ``forward(y, y_hat)`` -> per-window lists."""

    def __init__(self, resolutions: tuple[int, ...] = MRD_RESOLUTIONS, channels: int = MRD_CHANNELS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(w, channels) for w in resolutions)

    def forward(self, y: Tensor, y_hat: Tensor) -> DiscriminatorOutput:
        """(B, T), (B, T) -> (scores_real, scores_fake, fmaps_real, fmaps_fake), 3 windows each."""
        return _run_pair(self.discriminators, y, y_hat)
