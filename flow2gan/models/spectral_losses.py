"""Extra reconstruction losses of the stage-2 generator (flow2gan extensions, off in the paper's settings).

The paper's generator loss compares log-mels only (:func:`flow2gan.models.gan.mel_recon_per_scale`);
on a CPU budget, where the discriminators cannot be afforded, two more direct targets measurably
help (``benchmarks/README.md``, "Phase and STFT losses"):

* :func:`phase_derivative_loss`: the phase *derivatives* of the STFT, instantaneous frequency (phase
  change between frames) and group delay (phase change between bins), as in the anti-wrapping phase
  losses of APNet (Ai and Ling, 2023, "APNet: an all-frame-level neural vocoder incorporating direct
  prediction of amplitude and phase spectra"). Derivatives, unlike the phase itself, do not depend on
  the signal's polarity or on a constant phase offset, which a mel does not determine. Here each
  derivative is compared as a unit phasor, ``1 - cos(error)`` (wrap-free), weighted by the product of
  the reference's neighbouring magnitudes (about its power) so that loud harmonics count and
  noise-floor bins do not.
* :func:`stft_magnitude_loss`: spectral convergence plus log-magnitude L1 on linear-frequency STFTs
  (Arik et al., 2018; Yamamoto et al., 2020, Parallel WaveGAN), which weights loud, high-resolution
  harmonic structure more than the log-mel L1 does.

Both take waveforms (B, T) and return a scalar; the STFTs are centred, Hann-windowed, hop n_fft / 4.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from flow2gan.features import LOG_CLAMP, complex_stft

PHASE_LOSS_N_FFTS = (512, 1024)
STFT_LOSS_N_FFTS = (512, 1024, 2048)
_PHASOR_EPS = 1e-4  # relative to the mean magnitude: keeps the unit phasor's gradient bounded near zero


def _stft_pairs(real: Tensor, fake: Tensor, n_ffts: tuple[int, ...]) -> Iterator[tuple[Tensor, Tensor]]:
    """Complex STFTs ``(X, Y)`` of reference and output per resolution; ``ValueError`` if shapes differ."""
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    for n_fft in n_ffts:
        window = torch.hann_window(n_fft, device=real.device, dtype=real.dtype)
        yield complex_stft(real, n_fft, n_fft // 4, window), complex_stft(fake, n_fft, n_fft // 4, window)


def _neighbour_products(spec: Tensor, dim: int) -> Tensor:
    """``S[k] * conj(S[k - 1])`` along ``dim``: its angle is the phase derivative there."""
    n = spec.shape[dim]
    return spec.narrow(dim, 1, n - 1) * spec.narrow(dim, 0, n - 1).conj()


def phase_derivative_loss(
    real: Tensor, fake: Tensor, n_ffts: tuple[int, ...] = PHASE_LOSS_N_FFTS, weight_power: float = 1.0
) -> Tensor:
    """Energy-weighted ``1 - cos`` of the instantaneous-frequency and group-delay errors.

    For each resolution and each derivative (frames, bins): with ``P = X[k] conj(X[k-1])`` of the
    reference and ``Q`` the same of the generated STFT, the mean of ``1 - cos(∠Q − ∠P)`` weighted by
    ``w = |P|^weight_power``, ``1 - Σ w Re(Q/|Q| · conj(P/|P|)) / Σ w``. ``|P| = |X[k]| |X[k-1]|`` is
    about the reference's power, so ``weight_power`` 1 weighs by power and 0.5 by magnitude (quieter
    harmonics count more). The sums pool the whole batch, so louder crops weigh more. Averaged over the
    2 × len(n_ffts) terms. real, fake: (B, T) -> () in [0, 2]; 0 when the derivatives agree wherever
    the reference has energy.
    """
    loss = real.new_zeros(())
    for ref, gen in _stft_pairs(real, fake, n_ffts):
        for dim in (-1, -2):
            p, q = _neighbour_products(ref, dim), _neighbour_products(gen, dim)
            q_abs, p_abs = q.abs(), p.abs()
            eps = _PHASOR_EPS * q_abs.mean().detach() + 1e-12
            weight = p_abs.pow(weight_power)
            agreement = (q / (q_abs + eps) * (p / (p_abs + 1e-30)).conj()).real * weight
            loss = loss + 1 - agreement.sum() / (weight.sum() + 1e-12)
    return loss / (2 * len(n_ffts))


def stft_magnitude_loss(real: Tensor, fake: Tensor, n_ffts: tuple[int, ...] = STFT_LOSS_N_FFTS) -> Tensor:
    """Mean over resolutions of spectral convergence ``‖|X|−|Y|‖_F / ‖|X|‖_F`` + mean ``|log|X| − log|Y||``.

    Both magnitudes are clamped at 1e-7 before the log (as in the mel loss); sums and means pool the
    whole batch. real, fake: (B, T) -> ().
    """
    loss = real.new_zeros(())
    for ref_spec, gen_spec in _stft_pairs(real, fake, n_ffts):
        ref, gen = ref_spec.abs(), gen_spec.abs()  # d|z|/dz = 0 at z = 0
        convergence = torch.linalg.vector_norm(ref - gen) / (torch.linalg.vector_norm(ref) + 1e-12)
        log_ref, log_gen = torch.log(ref.clamp(min=LOG_CLAMP)), torch.log(gen.clamp(min=LOG_CLAMP))
        log_l1 = torch.mean(torch.abs(log_ref - log_gen))
        loss = loss + convergence + log_l1
    return loss / len(n_ffts)
