"""The stage-2 extra losses (phase derivative, STFT magnitude, periodicity) and their GAN wiring."""

import functools
import math

import pytest
import torch

from flow2gan.config import get_generator_config
from flow2gan.features import complex_stft
from flow2gan.models.gan import GAN, GANLossScales
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.spectral_losses import (
    frame_autocorrelation,
    periodicity_loss,
    phase_derivative_loss,
    stft_magnitude_loss,
)

SR = 24000
periodicity_24k = functools.partial(periodicity_loss, sampling_rate=SR)
ALL_LOSSES = (phase_derivative_loss, stft_magnitude_loss, periodicity_24k)


def voiced(n: int = 12288, f0: float = 150.0, seed: int = 0) -> torch.Tensor:
    """(2, n): harmonic signals with a slow vibrato, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    out = []
    for b in range(2):
        phase = 2 * math.pi * (f0 * (1 + 0.1 * b) * t + 2.0 * torch.sin(2 * math.pi * 3 * t))
        x = sum(torch.sin(k * phase) / k for k in range(1, 12))
        out.append(0.2 * x + 0.002 * torch.randn(n, generator=g))
    return torch.stack(out)


def random_phase(x: torch.Tensor, n_fft: int = 1024, seed: int = 1) -> torch.Tensor:
    """Same STFT magnitudes, uniformly random phases (one iSTFT, no iterations)."""
    window = torch.hann_window(n_fft)
    spec = complex_stft(x, n_fft, n_fft // 4, window)
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(spec.shape, generator=g) * 2 * math.pi
    spec = spec.abs() * torch.exp(1j * phase)
    return torch.istft(spec, n_fft, n_fft // 4, n_fft, window, length=x.shape[-1])


def test_phase_loss_zero_for_identical_and_polarity_invariant() -> None:
    x = voiced()
    assert phase_derivative_loss(x, x.clone()).item() < 1e-3
    assert phase_derivative_loss(x, -x).item() < 1e-3  # a mel does not determine the polarity
    assert stft_magnitude_loss(x, x.clone()).item() < 1e-5
    assert stft_magnitude_loss(x, -x).item() < 1e-5


def test_phase_loss_sees_what_magnitudes_miss() -> None:
    x = voiced()
    scrambled = random_phase(x)
    noisy = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert phase_derivative_loss(x, scrambled).item() > 0.2  # measured 0.32
    assert phase_derivative_loss(x, noisy).item() < 0.02  # measured 0.0005
    # scaling the level leaves the phase untouched but is a magnitude error
    assert phase_derivative_loss(x, 0.5 * x).item() < 1e-3
    assert stft_magnitude_loss(x, 0.5 * x).item() > 0.5


def test_phase_loss_weight_power_counts_quiet_harmonics_more() -> None:
    """Phase scrambled only where the reference is 20 dB down: weighting by power (1) hardly sees it,
    weighting by magnitude (0.5) sees ~10x as much; an exact match is 0 at every power."""
    x = voiced()
    half = x.shape[-1] // 2
    x[:, half:] *= 0.1
    fake = torch.cat([x[:, :half], random_phase(x)[:, half:]], dim=-1)
    by_power = phase_derivative_loss(x, fake, weight_power=1.0).item()
    by_magnitude = phase_derivative_loss(x, fake, weight_power=0.5).item()
    assert by_magnitude > 4 * by_power  # measured 0.056 vs 0.0061
    assert phase_derivative_loss(x, x.clone(), weight_power=1.0).item() < 1e-3
    # the phasor's epsilon shrinks bins ~40 dB below the mean level, which magnitude weighting counts
    assert phase_derivative_loss(x, x.clone(), weight_power=0.5).item() < 0.02  # measured 0.014
    with pytest.raises(ValueError, match="--phase-loss-weight-power must be a finite number >= 0"):
        GANLossScales(phase_loss_weight_power=-1.0)


def test_phase_loss_max_freq_compares_only_the_bins_below_it() -> None:
    """Phase scrambled above 1 kHz only: invisible with max_freq 500 Hz, seen without a limit."""
    x = voiced()
    low = torch.fft.irfft(torch.fft.rfft(x) * (torch.fft.rfftfreq(x.shape[-1], 1 / SR) < 1000), x.shape[-1])
    fake = low + random_phase(x - low)
    assert phase_derivative_loss(x, fake).item() > 0.01  # measured 0.022 (the upper harmonics are weak)
    assert phase_derivative_loss(x, fake, max_freq=500.0, sampling_rate=SR).item() < 1e-3  # measured 1e-4
    assert phase_derivative_loss(x, random_phase(x), max_freq=500.0, sampling_rate=SR).item() > 0.2  # 0.31
    for max_freq, rate in ((0.0, SR), (math.inf, SR), (2000.0, None)):
        with pytest.raises(ValueError, match="max_freq must be a finite number > 0 with a sampling rate"):
            phase_derivative_loss(x, x, max_freq=max_freq, sampling_rate=rate)


def test_group_delay_sees_a_time_shift() -> None:
    """Isolated clicks shifted by 128 samples keep their instantaneous frequency but not their group delay
    (phase step between bins 2 pi 128 / n_fft: 1 - cos = 1 at n_fft 512, 0.29 at 1024)."""
    x = torch.zeros(2, 12288)
    x[:, 100::2048] = 1.0
    x = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert phase_derivative_loss(x, torch.roll(x, 128, dims=-1)).item() > 0.2  # measured 0.41


def test_losses_have_finite_gradients_for_partly_silent_output() -> None:
    x = voiced()
    for loss_fn in ALL_LOSSES:
        fake = x.clone()
        fake[:, x.shape[-1] // 2 :] = 0
        fake.requires_grad_(True)
        loss_fn(x, fake).backward()
        assert torch.isfinite(fake.grad).all()
        assert fake.grad.abs().sum() > 0


def test_stft_loss_zero_for_identical_signals_with_silent_bins() -> None:
    x = voiced()
    x[:, 4096:8192] = 0  # digital silence: magnitudes below every floor
    assert stft_magnitude_loss(x, x.clone()).item() < 1e-5
    assert phase_derivative_loss(x, x.clone()).item() < 1e-3


def test_negative_loss_scales_are_rejected() -> None:
    for name in ("phase_loss_scale", "stft_loss_scale", "periodicity_loss_scale"):
        flag = "--" + name.replace("_", "-")
        with pytest.raises(ValueError, match=f"{flag} must be a finite number >= 0"):
            GANLossScales(**{name: -1.0})


def test_losses_reject_mismatched_shapes() -> None:
    x = voiced()
    for loss_fn in ALL_LOSSES:
        with pytest.raises(ValueError, match="differ in shape"):
            loss_fn(x, x[:, :-256])


def test_gan_adds_the_terms_only_when_scaled() -> None:
    torch.manual_seed(0)
    config = get_generator_config("mel_24k_small_envelope").replace(branch_dropout=0.0)
    generator = MelAudioGenerator(config)
    audio = voiced(n=24 * 256)
    mel = torch.randn(2, config.n_mels, 24)
    paper = GAN.from_config(generator, "gan_small_multi_scale_mel_recon")
    scales = GANLossScales(phase_loss_scale=20.0, stft_loss_scale=10.0, periodicity_loss_scale=30.0)
    extra = GAN.from_config(generator, "gan_small_multi_scale_mel_recon", loss_scales=scales)
    for gan in (paper, extra):
        gan.set_step_modes(discriminator_step=False)
    torch.manual_seed(1)  # the same start noise for both
    loss_p, info_p = paper(audio, mel, None, 2, discriminator_step=False, adversarial=False)
    torch.manual_seed(1)
    loss_e, info_e = extra(audio, mel, None, 2, discriminator_step=False, adversarial=False)
    assert set(info_p) == {"loss_g", "mel_recon_loss"}
    assert set(info_e) == {"loss_g", "mel_recon_loss", "phase_loss", "stft_loss", "periodicity_loss"}
    torch.testing.assert_close(info_e["mel_recon_loss"], info_p["mel_recon_loss"])
    expected = (
        45.0 * info_e["mel_recon_loss"]
        + 20.0 * info_e["phase_loss"]
        + 10.0 * info_e["stft_loss"]
        + 30.0 * info_e["periodicity_loss"]
    )
    torch.testing.assert_close(loss_e.detach(), expected)
    torch.testing.assert_close(loss_p.detach(), 45.0 * info_p["mel_recon_loss"])
    loss_adv, info_adv = extra(audio, mel, None, 2, discriminator_step=False, adversarial=True)
    adversarial = (
        info_adv["gen_loss_mp"]
        + 0.1 * info_adv["gen_loss_mr"]
        + info_adv["feat_map_loss_mp"]
        + 0.1 * info_adv["feat_map_loss_mr"]
    )
    reconstruction = (
        45.0 * info_adv["mel_recon_loss"]
        + 20.0 * info_adv["phase_loss"]
        + 10.0 * info_adv["stft_loss"]
        + 30.0 * info_adv["periodicity_loss"]
    )
    torch.testing.assert_close(loss_adv.detach(), adversarial + reconstruction)


def test_gan_phase_loss_uses_the_configured_resolutions_and_band() -> None:
    torch.manual_seed(0)
    config = get_generator_config("mel_24k_small_envelope").replace(branch_dropout=0.0)
    audio = voiced(n=24 * 256)
    fake = random_phase(audio)
    for n_ffts, max_freq in (
        ((512, 1024), 0.0),
        ((512, 1024, 2048), 0.0),
        ((256,), 0.0),
        ((512, 1024), 2000.0),
    ):
        scales = GANLossScales(phase_loss_scale=1.0, phase_loss_n_ffts=n_ffts, phase_loss_max_freq=max_freq)
        gan = GAN.from_config(
            MelAudioGenerator(config), "gan_small_multi_scale_mel_recon", loss_scales=scales
        )
        _, terms = gan.reconstruction_loss(audio, fake)
        expected = phase_derivative_loss(audio, fake, n_ffts, 1.0, max_freq or None, config.sampling_rate)
        torch.testing.assert_close(terms["phase_loss"], expected)
    assert GANLossScales().phase_loss_max_freq == 0.0  # the paper's loss has no limit (and no phase loss)
    assert GANLossScales().phase_loss_n_ffts == (512, 1024)
    assert GANLossScales(phase_loss_n_ffts=[256, "512"]).phase_loss_n_ffts == (256, 512)
    for bad in ((), (2,)):
        with pytest.raises(ValueError, match="--phase-loss-n-ffts must be STFT sizes >= 4"):
            GANLossScales(phase_loss_n_ffts=bad)


def test_gan_periodicity_loss_uses_the_configured_peak_weight() -> None:
    config = get_generator_config("mel_24k_small_envelope")
    audio = voiced(n=24 * 256)
    fake = random_phase(audio)
    for weight in (0.0, 1.0, 2.5):
        scales = GANLossScales(periodicity_loss_scale=1.0, periodicity_peak_weight=weight)
        gan = GAN.from_config(
            MelAudioGenerator(config), "gan_small_multi_scale_mel_recon", loss_scales=scales
        )
        _, terms = gan.reconstruction_loss(audio, fake)
        expected = periodicity_loss(audio, fake, SR, peak_weight=weight)
        torch.testing.assert_close(terms["periodicity_loss"], expected)
    assert GANLossScales().periodicity_peak_weight == 1.0
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="--periodicity-peak-weight must be a finite number >= 0"):
            GANLossScales(periodicity_peak_weight=bad)


def test_frame_autocorrelation_is_linear_and_peaks_at_the_period() -> None:
    n, period, win = 9600, 160, 960  # 150 Hz at 24 kHz
    x = torch.zeros(1, n, dtype=torch.float64)
    x[0, ::period] = 1.0
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    acf = frame_autocorrelation(x, win, 240)[0]  # (960 lags, frames)
    assert int(acf[100:300, 20].argmax()) + 100 == period
    # frame 20 is centred at sample 20 * 240: the windowed segment around it, correlated directly
    start = 20 * 240 - win  # reflect padding of win samples shifts the frame start
    segment = torch.zeros(2 * win, dtype=torch.float64)
    segment[win // 2 : win // 2 + win] = x[0, start + win // 2 : start + win // 2 + win]
    segment[win // 2 : win // 2 + win] *= torch.hann_window(win, dtype=torch.float64)
    direct = torch.stack([torch.dot(segment[: 2 * win - k], segment[k:]) for k in range(win)])
    torch.testing.assert_close(acf[:, 20], direct)  # every lag: linear, not circular


def test_periodicity_loss_sees_noise_between_harmonics() -> None:
    x = voiced()
    assert periodicity_24k(x, x.clone()).item() < 1e-5
    assert periodicity_24k(x, -x).item() < 1e-5  # polarity
    assert periodicity_24k(x, 0.1 * x).item() < 1e-5  # level
    g = torch.Generator().manual_seed(3)
    noisy = x + 0.3 * x.std() * torch.randn(x.shape, generator=g)  # 10 dB harmonics-to-noise ratio
    assert periodicity_24k(x, noisy).item() > 0.05  # measured 0.086
    assert periodicity_24k(x, random_phase(x)).item() > 0.3  # measured 0.42
    assert periodicity_24k(x, noisy, peak_weight=0.0).item() > 0.01  # measured 0.020
    assert periodicity_24k(x, random_phase(x), peak_weight=0.0).item() > 0.08  # measured 0.16


def test_periodicity_loss_adds_the_error_at_the_reference_period() -> None:
    """The peak term is |r_fake - r_real| at the lag of the reference's (not the output's) highest r."""
    x = voiced()
    x[:, 8192:] *= 1e-4  # frames the gate all but drops
    fake = voiced(f0=120.0, seed=7)  # another pitch: the two autocorrelations peak at different lags
    lags = slice(int(SR / 550.0), math.ceil(SR / 50.0) + 1)
    acf_real, acf_fake = frame_autocorrelation(x, 960, 240), frame_autocorrelation(fake, 960, 240)
    r_real, r_fake = acf_real[:, lags] / acf_real[:, :1], acf_fake[:, lags] / acf_fake[:, :1]
    assert (r_real.argmax(1) != r_fake.argmax(1)).any()
    gate = acf_real[:, 0] / (acf_real[:, 0] + 1e-3 * acf_real[:, 0].mean())
    at_period = (r_fake - r_real).abs().gather(1, r_real.argmax(1, keepdim=True)).squeeze(1)
    expected = (at_period * gate).sum() / gate.sum()
    plain = periodicity_loss(x, fake, SR, peak_weight=0.0)
    torch.testing.assert_close(periodicity_loss(x, fake, SR, peak_weight=2.5), plain + 2.5 * expected)
    torch.testing.assert_close(periodicity_24k(x, fake), plain + expected)  # weight 1 by default
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="peak_weight"):
            periodicity_loss(x, fake, SR, peak_weight=bad)


def test_periodicity_loss_counts_quiet_and_loud_items_alike() -> None:
    """In one batch, noise in a -20 dB item costs about what the same relative noise in the loud one does."""
    x = voiced()[:1]
    noise = 0.3 * x.std() * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    batch = torch.cat([x, 0.1 * x])
    in_loud = periodicity_24k(batch, batch + torch.cat([noise, 0 * noise]))
    in_quiet = periodicity_24k(batch, batch + torch.cat([0 * noise, 0.1 * noise]))
    torch.testing.assert_close(in_quiet, in_loud, rtol=0.1, atol=0)  # measured 5 % apart (the gate)
    assert in_loud.item() > 0.005  # half of the batch's frames hold the noise


def test_periodicity_loss_ignores_digital_silence_and_checks_its_input() -> None:
    x = voiced()
    x[:, 4096:] = 0
    fake = x.clone()
    fake[:, 4096:] = 1e-4 * torch.randn(fake[:, 4096:].shape, generator=torch.Generator().manual_seed(4))
    # noise where the reference is digitally silent hardly counts (measured 8e-6)
    assert periodicity_24k(x, fake).item() < 1e-4
    with pytest.raises(ValueError, match="pitch lags"):
        periodicity_loss(x, x, SR, f0_range=(20.0, 550.0))  # 1200-sample lag > 960-sample window
    for bad in ((0.0, 550.0), (50.0, 0.0), (300.0, 100.0)):
        with pytest.raises(ValueError, match="f0_range"):
            periodicity_loss(x, x, SR, f0_range=bad)
    with pytest.raises(ValueError, match="too short"):
        periodicity_loss(x[:, :960], x[:, :960], SR)  # a 960-sample window needs more than 960
    assert periodicity_loss(x[:, :961], x[:, :961], SR).item() == 0.0
    with pytest.raises(ValueError, match="too short"):
        stft_magnitude_loss(x[:, :1024], x[:, :1024])  # n_fft 2048 pads 1024 per side
