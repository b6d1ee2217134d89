"""Extra reconstruction losses of the stage-2 generator (flow2gan extensions, off in the paper's settings).

The paper's generator loss compares log-mels only (:func:`flow2gan.models.gan.mel_recon_per_scale`);
on a CPU budget, where the discriminators cannot be afforded, more direct targets measurably help
(``benchmarks/README.md``, "Phase and STFT losses" and "Autocorrelation periodicity loss"):

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
* :func:`periodicity_loss`: the normalised autocorrelation ``R(τ) / R(0)`` of each frame at the lags
  of voice pitch (50-550 Hz), the time-domain measure of periodicity behind autocorrelation pitch
  trackers (Boersma, 1993, "Accurate short-term analysis of the fundamental frequency and the
  harmonics-to-noise ratio of a sampled sound", whose division by the window's own autocorrelation
  is left out here: both signals share the window). Per frame it is invariant to level, so quiet
  voiced frames count as much as loud ones, and noise between harmonics, which the wide mel bands
  above ~1 kHz do not see, lowers its peak at the pitch period. That peak, at the reference's
  period, is also compared on its own (``peak_weight``), as it is what a pitch tracker's
  periodicity reads.

All take waveforms (B, T) and return a scalar; the STFTs are centred (reflect padding, so T must
exceed half the longest frame: ``ValueError`` otherwise) and Hann-windowed, hop a quarter frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from flow2gan.features import LOG_CLAMP, complex_stft

PHASE_LOSS_N_FFTS = (512, 1024)
STFT_LOSS_N_FFTS = (512, 1024, 2048)
PERIODICITY_WINDOW_S = 0.04  # autocorrelation frame: two periods of the lowest pitch (Boersma uses 3)
PERIODICITY_F0_RANGE = (50.0, 550.0)  # Hz: the lags compared (CREPE's range in flow2gan.eval.pitch)
PERIODICITY_PEAK_WEIGHT = 1.0  # the pitch-period lag's extra weight (benchmarks/README.md, 2026-12-06)
_PHASOR_EPS = 1e-4  # relative to the mean magnitude: keeps the unit phasor's gradient bounded near zero
_GATE_LEVEL = 1e-3  # frames 30 dB below the batch's mean frame energy count half (silence not at all)


def _check_pair(real: Tensor, fake: Tensor, frame_length: int) -> None:
    """``ValueError`` unless both are (..., T) of one shape, T above the centring pad frame_length // 2."""
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    if real.shape[-1] <= frame_length // 2:
        raise ValueError(
            f"{real.shape[-1]} samples are too short for {frame_length}-sample analysis frames "
            f"(more than {frame_length // 2} needed)"
        )


def _stft_pairs(real: Tensor, fake: Tensor, n_ffts: tuple[int, ...]) -> Iterator[tuple[Tensor, Tensor]]:
    """Complex STFTs ``(X, Y)`` of reference and output per resolution (inputs checked by _check_pair)."""
    _check_pair(real, fake, max(n_ffts))
    for n_fft in n_ffts:
        window = torch.hann_window(n_fft, device=real.device, dtype=real.dtype)
        yield complex_stft(real, n_fft, n_fft // 4, window), complex_stft(fake, n_fft, n_fft // 4, window)


def _neighbour_products(spec: Tensor, dim: int) -> Tensor:
    """``S[k] * conj(S[k - 1])`` along ``dim``: its angle is the phase derivative there."""
    n = spec.shape[dim]
    return spec.narrow(dim, 1, n - 1) * spec.narrow(dim, 0, n - 1).conj()


def phase_derivative_loss(
    real: Tensor,
    fake: Tensor,
    n_ffts: tuple[int, ...] = PHASE_LOSS_N_FFTS,
    weight_power: float = 1.0,
    max_freq: float | None = None,
    sampling_rate: int | None = None,
) -> Tensor:
    """Energy-weighted ``1 - cos`` of the instantaneous-frequency and group-delay errors.

    For each resolution and each derivative (frames, bins): with ``P = X[k] conj(X[k-1])`` of the
    reference and ``Q`` the same of the generated STFT, the mean of ``1 - cos(∠Q − ∠P)`` weighted by
    ``w = |P|^weight_power``, ``1 - Σ w Re(Q/|Q| · conj(P/|P|)) / Σ w``. ``|P| = |X[k]| |X[k-1]|`` is
    about the reference's power, so ``weight_power`` 1 weighs by power and 0.5 by magnitude (quieter
    harmonics count more). The sums pool the whole batch, so louder crops weigh more. Averaged over the
    2 × len(n_ffts) terms. ``max_freq`` (Hz, with ``sampling_rate``) keeps the bins up to the first at
    or above it, ``ceil(max_freq · n_fft / sampling_rate)``: where the low harmonics that carry the
    pitch are, and where a few-step generator's phase errs most relative to Griffin-Lim's; higher up
    the phase is largely noise-like (benchmarks/README.md, round J). real, fake: (B, T) -> () in
    [0, 2]; 0 when the derivatives agree wherever the reference has energy. ``ValueError`` for a
    ``max_freq`` that is not a positive number or comes without ``sampling_rate``.
    """
    if max_freq is not None and not (sampling_rate and math.isfinite(max_freq) and max_freq > 0):
        raise ValueError(
            f"max_freq must be a finite number > 0 with a sampling rate, got {max_freq} Hz at {sampling_rate}"
        )
    loss = real.new_zeros(())
    for n_fft, (ref, gen) in zip(n_ffts, _stft_pairs(real, fake, n_ffts), strict=True):
        if max_freq is not None:
            bins = math.ceil(max_freq * n_fft / sampling_rate) + 1
            ref, gen = ref[..., :bins, :], gen[..., :bins, :]
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


def frame_autocorrelation(x: Tensor, win_length: int, hop_length: int) -> Tensor:
    """Autocorrelation of Hann-windowed frames, lags 0 .. win_length - 1: (B, T) -> (B, win_length, F).

    Computed as the inverse FFT of the power spectrum of frames zero-padded to twice their length, so
    it is linear (not circular); frames are centred at multiples of ``hop_length`` (reflect padding).
    """
    n_fft = 2 * win_length
    window = x.new_zeros(n_fft)
    window[win_length // 2 : win_length // 2 + win_length] = torch.hann_window(
        win_length, device=x.device, dtype=x.dtype
    )
    power = complex_stft(x, n_fft, hop_length, window).abs().pow(2)
    return torch.fft.irfft(power, n=n_fft, dim=-2)[..., :win_length, :]


def periodicity_loss(
    real: Tensor,
    fake: Tensor,
    sampling_rate: int,
    f0_range: tuple[float, float] = PERIODICITY_F0_RANGE,
    window_s: float = PERIODICITY_WINDOW_S,
    peak_weight: float = PERIODICITY_PEAK_WEIGHT,
) -> Tensor:
    """Distance of the frames' normalised autocorrelations at the pitch lags, and at the pitch period.

    ``r(τ) = R(τ) / R(0)`` per frame (Hann window of ``window_s`` seconds, hop a quarter of it), for
    the lags ``τ`` of ``f0_range`` (``sampling_rate / f0_max`` .. ``sampling_rate / f0_min``
    samples). A frame's distance is ``mean_τ |r_fake(τ) − r_real(τ)| + peak_weight ·
    |r_fake(τ*) − r_real(τ*)|`` with ``τ*`` the lag of the reference's highest ``r`` (in voiced
    frames its pitch period): that peak, which is what a pitch tracker's periodicity reads, is one
    lag among 438 in the mean at 24 kHz. Not divided by the window's autocorrelation (unlike
    Boersma, 1993), so ``r`` at the period of a pure tone is lower for low pitch (0.66 at 100 Hz,
    0.95 at 300 Hz at the defaults).
    Frames are weighted by ``e / (e + 1e-3 · mean e)`` with ``e`` the reference frame's energy
    ``R(0)``: frames down to ~20 dB below the batch's mean energy count about equally, 30 dB below
    it half, digital silence not at all; the sums pool the batch. The output's ``R(0)`` is floored
    at 1e-9 of the reference's mean, so the gradient grows as a frame of the output fades towards
    silence (it stays finite). real, fake: (B, T) -> () in [0, 2 (1 + peak_weight)]. ``ValueError``
    for differing shapes, T not above one window, an ``f0_range`` not ``0 < min < max``, a window
    shorter than the longest lag, or a negative or non-finite ``peak_weight``.
    """
    f0_min, f0_max = f0_range
    if not 0 < f0_min < f0_max:
        raise ValueError(f"f0_range must satisfy 0 < min < max, got {f0_range}")
    if not (math.isfinite(peak_weight) and peak_weight >= 0):
        raise ValueError(f"peak_weight must be a finite number >= 0, got {peak_weight}")
    win_length = round(window_s * sampling_rate)
    _check_pair(real, fake, 2 * win_length)
    lag_min, lag_max = int(sampling_rate / f0_max), math.ceil(sampling_rate / f0_min)
    if not 0 < lag_min < lag_max < win_length:
        raise ValueError(
            f"pitch lags {lag_min}..{lag_max} need 0 < min < max < window length {win_length} samples"
        )
    acf_real = frame_autocorrelation(real, win_length, win_length // 4).detach()  # the target
    acf_fake = frame_autocorrelation(fake, win_length, win_length // 4)
    energy_real, energy_fake = acf_real[..., 0, :], acf_fake[..., 0, :]
    mean_energy = energy_real.mean()
    eps = 1e-9 * mean_energy + 1e-20
    norm_real = acf_real[..., lag_min : lag_max + 1, :] / (energy_real.unsqueeze(-2) + eps)
    norm_fake = acf_fake[..., lag_min : lag_max + 1, :] / (energy_fake.unsqueeze(-2) + eps)
    gate = energy_real / (energy_real + _GATE_LEVEL * mean_energy + 1e-20)
    error = (norm_fake - norm_real).abs()
    period = norm_real.argmax(-2, keepdim=True)
    per_frame = error.mean(-2) + peak_weight * error.gather(-2, period).squeeze(-2)
    return (per_frame * gate).sum() / (gate.sum() + 1e-12)
