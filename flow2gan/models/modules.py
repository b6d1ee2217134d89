"""Building blocks of the generator: BiasNorm, ChannelScale, the ConvNeXt block, time embedding.

``LogMelSpectrogram`` and ``LinearFilterSpectrogram`` (:mod:`flow2gan.features`) are re-exported here
because reference scripts import them from this module (see :mod:`flow2gan.compat`).
"""

from __future__ import annotations

import math
import random

import torch
from torch import Tensor, nn

from flow2gan.features import LinearFilterSpectrogram, LogMelSpectrogram

__all__ = [
    "BiasNorm",
    "ChannelScale",
    "ConvNeXtBlock",
    "LinearFilterSpectrogram",
    "LogMelSpectrogram",
    "fit_length",
    "limit_param_value",
    "sinusoidal_embedding",
]

LIMIT_PROB = 0.6


class _LimitParamValue(torch.autograd.Function):
    """Identity forward; backward flips gradients that would push an out-of-range value further out."""

    @staticmethod
    def forward(ctx, x: Tensor, min_value: float, max_value: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.min_value, ctx.max_value = min_value, max_value
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        flip = ((grad > 0) & (x < ctx.min_value)) | ((grad < 0) & (x > ctx.max_value))
        return torch.where(flip, -grad, grad), None, None


def limit_param_value(x: Tensor, min_value: float, max_value: float, training: bool) -> Tensor:
    """In training (with prob. 0.6 per call) steer ``x`` back into [min, max] through its gradient."""
    if training and torch.is_grad_enabled() and random.random() < LIMIT_PROB:
        return _LimitParamValue.apply(x, min_value, max_value)
    return x


def fit_length(x: Tensor, length: int) -> Tensor:
    """Trim or zero-pad the last axis at its end to ``length``: (..., L) -> (..., length)."""
    current = x.shape[-1]
    if current >= length:
        return x[..., :length]
    return nn.functional.pad(x, (0, length - current))


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal embedding of flow time: (B,) -> (B, dim), all sines then all cosines."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=t.dtype) * (-math.log(10000.0) / (half - 1)))
    angles = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class BiasNorm(nn.Module):
    """``x * exp(log_scale) / rms_over_channels(x - bias)``, no epsilon: (B, C, L) -> (B, C, L)."""

    def __init__(self, num_channels: int, log_scale_min: float = -1.5, log_scale_max: float = 1.5) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(1.0))
        self.bias = nn.Parameter(torch.randn(num_channels) * 0.01)
        self.log_scale_min = log_scale_min
        self.log_scale_max = log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, L) -> (B, C, L), normalised over C."""
        log_scale = limit_param_value(self.log_scale, self.log_scale_min, self.log_scale_max, self.training)
        scales = torch.mean((x - self.bias.unsqueeze(-1)) ** 2, dim=1, keepdim=True) ** -0.5
        return x * (scales * log_scale.exp())


class ChannelScale(nn.Module):
    """Per-channel multiplier initialised to 1, kept in [0.5, 1.0] in training: (B, C, L) -> (B, C, L)."""

    def __init__(self, num_channels: int, min_value: float = 0.5, max_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_channels, 1))
        self.min_value = min_value
        self.max_value = max_value

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, L) -> (B, C, L)."""
        return x * limit_param_value(self.scale, self.min_value, self.max_value, self.training)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block with optional additive condition and multiplicative time modulation.

    The condition and time terms are passed in already projected (see :meth:`cond_term` and
    :meth:`time_scale`) so that work that does not change between Euler steps is done once.
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        cond_channels: int | None = None,
        time_channels: int | None = None,
        residual_scale: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.dwconv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = BiasNorm(channels)
        self.pwconv1 = nn.Conv1d(channels, hidden_channels, 1)
        self.act = nn.PReLU(hidden_channels)
        self.pwconv2 = nn.Conv1d(hidden_channels, channels, 1)
        self.cond_proj = nn.Conv1d(cond_channels, channels, 1) if cond_channels else None
        self.time_embed_proj = nn.Linear(time_channels, channels) if time_channels else None
        self.residual_scale = ChannelScale(channels) if residual_scale else None

    def cond_term(self, cond: Tensor) -> Tensor:
        """Projected condition added after the norm: (B, E, L) -> (B, C, L)."""
        return self.cond_proj(cond)

    def time_scale(self, time_emb: Tensor) -> Tensor:
        """Multiplicative time modulation ``1 + proj(tau)``: (B, Te) -> (B, C, 1)."""
        return (1 + self.time_embed_proj(time_emb)).unsqueeze(-1)

    def forward(
        self,
        x: Tensor,
        cond_term: Tensor | None = None,
        time_scale: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """(B, C, L) -> (B, C, L); ``mask`` (B, 1, L) zeroes padded frames of the block input only."""
        residual = x
        if mask is not None:
            x = x * mask
        x = self.norm(self.dwconv(x))
        if cond_term is not None:
            x = x + cond_term
        if time_scale is not None:
            x = x * time_scale
        x = self.pwconv2(self.act(self.pwconv1(x)))
        if self.residual_scale is not None:
            residual = self.residual_scale(residual)
        return x + residual
