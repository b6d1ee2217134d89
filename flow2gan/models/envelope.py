"""Mel-envelope preconditioning of the branch decoders (a flow2gan extension, off in the paper's configs).

The paper's decoders see each frame's STFT after a per-frame normalisation and must rebuild its
absolute level, over five decades of magnitude, from the log-mel with piecewise-linear layers. That
is learned at full scale (79 M parameters, ~139 k steps) but not by small models on a CPU budget
(measured in ``benchmarks/README.md``: outputs 3-13x too quiet, held-out PESQ ~1.1 after thousands of
steps). With ``GeneratorConfig.envelope_precond`` the magnitudes are taken from the mel instead, in
the manner of the input/output scalings of EDM (Karras et al., 2022, "Elucidating the design space of
diffusion-based generative models"), per STFT bin rather than per tensor:

* ``E`` (B, N/2+1, F_i): the spectral envelope of the branch, interpolated from ``exp(log-mel)``
  (each mel band's magnitude divided by its filter's bin count, spread over the branch bins by the
  branch's normalised mel triangles, times ``sqrt(N_i / mel_n_fft)`` for the window-length change);
* at flow time t, ``x_t``'s bins have standard deviation ``s = sqrt(((1-t) s0)^2 + (t E)^2)`` with
  ``s0 = init_noise_scale * ||window||`` (the start noise's STFT level);
* the decoder sees ``STFT(x_t) / s`` and the endpoint estimate is
  ``c_skip * STFT(x_t) + c_out * decoder(...)`` with ``c_skip = t E^2 / s^2``, ``c_out = (1-t) s0 E / s``
  (the Wiener estimate of x1 from x_t plus a learned correction scaled to its residual error).

The state dict is unchanged (the filterbanks are non-persistent buffers), so the option can be
switched on for fine-tuning any checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flow2gan.config import GeneratorConfig
from flow2gan.features import mel_filterbank
from flow2gan.models.modules import fit_length

ENVELOPE_FLOOR = 1e-6


def branch_interpolation(config: GeneratorConfig, n_fft: int) -> Tensor:
    """Mel band magnitudes -> branch bin magnitudes: (n_fft // 2 + 1, n_mels).

    Rows are the branch's mel triangles normalised to sum 1 (the edge bins, which no triangle
    reaches, copy the first / last band), divided by the bin count of each band's filter at the mel
    front-end's resolution and scaled by ``sqrt(n_fft / mel_n_fft)``.
    """
    bins_per_band = mel_filterbank(config.mel_n_fft // 2 + 1, config.sampling_rate, config.n_mels).sum(0)
    weights = mel_filterbank(n_fft // 2 + 1, config.sampling_rate, config.n_mels)
    weights[0, 0] = torch.clamp(weights[0, 0], min=1.0)
    weights[-1, -1] = torch.clamp(weights[-1, -1], min=1.0)
    weights = weights / weights.sum(1, keepdim=True)
    scale = math.sqrt(n_fft / config.mel_n_fft)
    return weights / bins_per_band.clamp(min=1e-3).unsqueeze(0) * scale


class MelEnvelope(nn.Module):
    """Spectral envelopes of every branch from a log-mel (see the module docstring)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.hops = [config.mel_hop_length // hop for hop in config.hop_lengths]
        for i, n_fft in enumerate(config.n_ffts):
            self.register_buffer(f"interp{i}", branch_interpolation(config, n_fft), persistent=False)
        self.noise_levels = [
            config.init_noise_scale * float(torch.hann_window(n_fft).pow(2).sum().sqrt())
            for n_fft in config.n_ffts
        ]

    def forward(self, mel: Tensor, branch: int, n_frames: int) -> Tensor:
        """log-mel (B, M, F) -> envelope (B, N_i/2+1, n_frames) of branch ``branch``, >= 1e-6.

        Mel frames are repeated to the branch hop like the condition (SPEC 2.8); frames past the
        mel's end repeat its last frame.
        """
        interp = getattr(self, f"interp{branch}")
        env = torch.einsum("fm,bmt->bft", interp.to(mel.dtype), mel.exp())
        env = env.repeat_interleave(self.hops[branch], dim=-1)
        if env.shape[-1] < n_frames:
            env = torch.cat([env, env[..., -1:].expand(-1, -1, n_frames - env.shape[-1])], dim=-1)
        return fit_length(env, n_frames).clamp(min=ENVELOPE_FLOOR)

    def scalings(self, envelope: Tensor, t: Tensor, branch: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(c_in, c_skip, c_out)``, each (B, N/2+1, F), for envelope (B, N/2+1, F) and t (B,)."""
        t = t.reshape(-1, 1, 1).to(envelope.dtype)
        s0 = self.noise_levels[branch]
        var = ((1 - t) * s0) ** 2 + (t * envelope) ** 2
        std = var.sqrt()
        return 1 / std, t * envelope**2 / var, (1 - t) * s0 * envelope / std
