"""Speed baselines written from published config values only: a Vocos-like and a BigVGAN-v2-like vocoder.

Both are random-weight, inference-only re-creations meant for timing (weight norm is omitted, as it is
folded away for inference). See ``benchmarks/README.md`` for where every number comes from.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Vocos, mel-24khz config.
VOCOS_N_MELS = 100
VOCOS_DIM = 512
VOCOS_INTERMEDIATE_DIM = 1536
VOCOS_NUM_LAYERS = 8
VOCOS_KERNEL = 7
VOCOS_N_FFT = 1024
VOCOS_HOP = 256
VOCOS_MAX_MAG = 1e2

# BigVGAN-v2, 24 kHz 100-band 256x config.
BIGVGAN_N_MELS = 100
BIGVGAN_UPSAMPLE_RATES = (4, 4, 2, 2, 2, 2)
BIGVGAN_UPSAMPLE_KERNELS = (8, 8, 4, 4, 4, 4)
BIGVGAN_INITIAL_CHANNELS = 1536
BIGVGAN_RESBLOCK_KERNELS = (3, 7, 11)
BIGVGAN_RESBLOCK_DILATIONS = (1, 3, 5)
BIGVGAN_FILTER_SIZE = 12
BIGVGAN_AA_RATIO = 2


class VocosBlock(nn.Module):
    """ConvNeXt block: depthwise conv -> LayerNorm -> Linear -> GELU -> Linear -> layer scale, residual."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, L) -> (B, C, L)."""
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.pwconv2(F.gelu(self.pwconv1(y))) * self.gamma
        return x + y.transpose(1, 2)


class VocosLike(nn.Module):
    """Vocos mel-24khz: ConvNeXt backbone + ISTFT head; log-mel (B, 100, F) -> waveform (B, hop * (F - 1))."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv1d(VOCOS_N_MELS, VOCOS_DIM, VOCOS_KERNEL, padding=VOCOS_KERNEL // 2)
        self.norm = nn.LayerNorm(VOCOS_DIM, eps=1e-6)
        self.blocks = nn.ModuleList(
            VocosBlock(VOCOS_DIM, VOCOS_INTERMEDIATE_DIM, VOCOS_KERNEL, 1.0 / VOCOS_NUM_LAYERS)
            for _ in range(VOCOS_NUM_LAYERS)
        )
        self.final_norm = nn.LayerNorm(VOCOS_DIM, eps=1e-6)
        self.head = nn.Linear(VOCOS_DIM, VOCOS_N_FFT + 2)
        self.register_buffer("window", torch.hann_window(VOCOS_N_FFT))

    def forward(self, mel: Tensor) -> Tensor:
        """(B, 100, F) -> (B, 256 * (F - 1)); torch.istft with center=True stands in for "same" padding."""
        x = self.embed(mel)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)
        log_mag, phase = x.chunk(2, dim=1)
        mag = torch.exp(log_mag).clamp(max=VOCOS_MAX_MAG)
        spec = torch.polar(mag, phase)
        return torch.istft(spec, VOCOS_N_FFT, VOCOS_HOP, VOCOS_N_FFT, self.window, center=True)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """Kaiser-windowed sinc low-pass (cutoff and transition half-width in cycles/sample), unit DC gain."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21.0) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta, dtype=torch.float64)
    offset = 0.5 if kernel_size % 2 == 0 else 0.0
    time = torch.arange(-half, half + kernel_size % 2, dtype=torch.float64) + offset
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).float()


class SnakeBeta(nn.Module):
    """``x + sin^2(x * e^alpha) / (e^beta + eps)`` with per-channel log-scale alpha, beta (init 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels, 1))
        self.beta = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, L) -> (B, C, L)."""
        return x + torch.sin(x * self.alpha.exp()).pow(2) / (self.beta.exp() + 1e-9)


class AntiAliasedActivation(nn.Module):
    """Upsample x2 (transposed conv) -> SnakeBeta -> low-pass + decimate x2 (strided conv), depthwise."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        ratio, size = BIGVGAN_AA_RATIO, BIGVGAN_FILTER_SIZE
        taps = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, size)
        self.register_buffer("filter", taps.expand(channels, 1, size).contiguous())
        self.act = SnakeBeta(channels)
        self.channels = channels
        self.up_pad = size // ratio - 1
        self.up_crop = self.up_pad * ratio + (size - ratio) // 2
        self.down_pad = (size // 2 - 1, size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, L) -> (B, C, L)."""
        ratio, length = BIGVGAN_AA_RATIO, x.shape[-1]
        x = F.pad(x, (self.up_pad, self.up_pad), mode="replicate")
        x = ratio * F.conv_transpose1d(x, self.filter, stride=ratio, groups=self.channels)
        x = self.act(x[..., self.up_crop : self.up_crop + ratio * length])
        x = F.pad(x, self.down_pad, mode="replicate")
        return F.conv1d(x, self.filter, stride=ratio, groups=self.channels)


class AMPBlock(nn.Module):
    """BigVGAN resblock "1": per dilation, act -> dilated conv -> act -> conv, residual."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations
        )
        self.acts = nn.ModuleList(AntiAliasedActivation(channels) for _ in range(2 * len(dilations)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, L) -> (B, C, L)."""
        for i, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2, strict=True)):
            x = x + conv2(self.acts[2 * i + 1](conv1(self.acts[2 * i](x))))
        return x


class BigVGANv2Like(nn.Module):
    """BigVGAN-v2 24 kHz 100-band 256x; log-mel (B, 100, F) -> waveform (B, 256 * F), clamped to [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        channels = BIGVGAN_INITIAL_CHANNELS
        self.conv_pre = nn.Conv1d(BIGVGAN_N_MELS, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.stages = nn.ModuleList()
        for rate, kernel in zip(BIGVGAN_UPSAMPLE_RATES, BIGVGAN_UPSAMPLE_KERNELS, strict=True):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, kernel, rate, (kernel - rate) // 2))
            channels //= 2
            self.stages.append(
                nn.ModuleList(
                    AMPBlock(channels, k, BIGVGAN_RESBLOCK_DILATIONS) for k in BIGVGAN_RESBLOCK_KERNELS
                )
            )
        self.act_post = AntiAliasedActivation(channels)
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3, bias=False)

    def forward(self, mel: Tensor) -> Tensor:
        """(B, 100, F) -> (B, 256 * F)."""
        x = self.conv_pre(mel)
        for up, blocks in zip(self.ups, self.stages, strict=True):
            x = up(x)
            x = sum(block(x) for block in blocks) / len(blocks)
        x = self.conv_post(self.act_post(x))
        return x.squeeze(1).clamp(-1.0, 1.0)
