"""benchmarks/pitch_gap.py: the hybrids and the per-band phase errors it reports (no CREPE, no model)."""

import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from flow2gan.config import get_generator_config
from flow2gan.features import mel_frontend
from flow2gan.training.condition import make_generator

sys.path.insert(0, str(REPO / "benchmarks"))

import pitch_gap  # noqa: E402

SR = 24000


def harmonic(n: int = 12000, f0: float = 150.0, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / SR
    noise = 0.01 * np.random.default_rng(seed).standard_normal(n)
    return sum(np.sin(2 * np.pi * k * f0 * t + k) / k for k in range(1, 20)) + noise


def test_band_split_is_exact_and_puts_each_harmonic_on_its_side() -> None:
    x = harmonic()
    low, high = pitch_gap.band_split(x, 1000.0, SR)
    np.testing.assert_allclose(low + high, x, atol=1e-12)
    spectrum = np.abs(np.fft.rfft(high))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    assert spectrum[freqs < 1000].max() < 1e-9 * spectrum.max()


def test_swap_below_keeps_what_it_is_not_asked_to_change() -> None:
    x, y = harmonic(seed=1), harmonic(f0=170.0, seed=2)
    # the same signal as magnitude, phase and rest: an STFT round trip
    np.testing.assert_allclose(pitch_gap.swap_below(x, x, x, 1000.0, SR, 512), x, atol=1e-9)
    # above the split the result is the rest's; below it, magnitude and phase come from their sources
    mixed = pitch_gap.swap_below(x, y, y, 1000.0, SR, 512)
    assert not np.allclose(mixed, y, atol=1e-3)
    low, high = pitch_gap.band_split(mixed - y, 1200.0, SR)
    assert (high**2).sum() < 0.01 * (low**2).sum()  # measured 0.0005: the change stays below the split


def test_phase_errors_are_zero_for_the_reference_and_high_for_noise() -> None:
    x = harmonic()
    same = pitch_gap.phase_errors(x, x.copy(), 512, SR)
    noise = pitch_gap.phase_errors(x, np.random.default_rng(3).standard_normal(len(x)), 512, SR)
    assert set(same) == {"0-500 Hz", "500-1000 Hz", "1000-2000 Hz", "2000-4000 Hz", "> 4000 Hz"}
    for band in same:
        assert same[band][0] / same[band][1] == pytest.approx(0, abs=1e-9)  # IF
        assert same[band][2] / same[band][3] == pytest.approx(0, abs=1e-9)  # group delay
    assert noise["0-500 Hz"][0] / noise["0-500 Hz"][1] > 0.5  # random phase: 1 - cos averages ~1


def test_comb_share_finds_a_tone_on_its_harmonics_and_off_the_frame_grid() -> None:
    tone = pitch_gap.harmonic_tone(130.0, SR, seconds=1.0)
    assert np.abs(tone).max() == pytest.approx(0.5)
    assert pitch_gap.comb_share(tone, 130.0, SR, pitch_gap.TONE_COMB) > 0.99
    # 93.75 Hz grid: 130 Hz harmonics come closest at 650 vs 656.25 Hz, just beyond the 5 Hz half-width
    assert pitch_gap.comb_share(tone, 93.75, SR, pitch_gap.TONE_COMB) < 0.01
    on_grid = pitch_gap.harmonic_tone(187.5, SR, seconds=1.0)
    assert pitch_gap.comb_share(on_grid, 93.75, SR, pitch_gap.TONE_COMB) > 0.99
    # a tone whose harmonics are all grid lines has nothing on the grid's other lines
    assert pitch_gap.comb_share(on_grid, 93.75, SR, pitch_gap.TONE_COMB, exclude_hz=187.5) < 0.01


def test_comb_share_of_noise_is_the_share_of_bins_and_short_input_is_padded() -> None:
    noise = np.random.default_rng(4).standard_normal(SR * 4)
    share = pitch_gap.comb_share(noise, 93.75, SR)
    band = pitch_gap.COMB_BAND_HZ
    freqs = np.fft.rfftfreq(pitch_gap.SPEECH_COMB[0], 1 / SR)
    in_band = (freqs >= band[0]) & (freqs < band[1])
    bins = (np.abs(freqs - np.maximum(np.round(freqs / 93.75), 1) * 93.75) <= 3.0)[in_band].mean()
    assert share == pytest.approx(bins, rel=0.15)  # measured: 0.093 of the bins
    padded = np.pad(noise[:1000], (0, pitch_gap.SPEECH_COMB[0] - 1000))
    assert pitch_gap.comb_share(noise[:1000], 93.75, SR) == pitch_gap.comb_share(padded, 93.75, SR)


def test_grid_table_reports_the_shares_the_chance_level_and_the_seed_difference_in_db() -> None:
    lines = pitch_gap.grid_table(np.array([0.1, 0.16, 0.097]), 0.1, 93.75, SR)
    assert lines[0] == "| audio | power 60–1000 Hz on the 93.75 Hz frame grid |"
    assert lines[2:5] == ["| reference | 0.100 |", "| output | 0.160 |", "| griffin-lim | 0.097 |"]
    assert lines[5] == "| (the grid's share of the bins: chance) | 0.093 |"  # 30 of the 321 bins
    assert lines[-1].startswith("two start-noise seeds: their outputs' difference below 1 kHz is -10.0 dB")
    deterministic = pitch_gap.grid_table(np.array([0.1, 0.16, 0.097]), 0.0, 93.75, SR)[-1]
    assert deterministic.endswith("is zero: the output does not depend on the noise")


def test_tone_table_scores_reference_output_and_griffin_lim(monkeypatch) -> None:
    monkeypatch.setattr(pitch_gap, "TONE_F0S", (150.0, 281.25))
    torch.manual_seed(0)
    config = get_generator_config("mel_24k_small_envelope")
    lines = pitch_gap.tone_table(make_generator(config, None).eval(), mel_frontend(config), 1, 93.75)
    assert lines[0].startswith("| stationary tones, f0 150–281.25 Hz | near the harmonics ↑ |")
    assert lines[2] == "| reference | 1.000 | 0.000 |"  # 281.25 Hz: every harmonic is a grid line
    for row, name in zip(lines[3:], ("output", "griffin-lim"), strict=True):
        near, off = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
        assert row.startswith(f"| {name} |") and 0 <= near <= 1 and 0 <= off <= 1 - near + 1e-3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--split-hz", "0"], "--split-hz must lie between 0 and 12000 Hz, got 0.0"),
        (["--split-hz", "nan"], "--split-hz must lie between 0 and 12000 Hz"),
        (["--n-fft", "3"], "--n-fft must be >= 16, got 3"),
        (["--pitch-seconds", "0"], "--pitch-seconds must be a finite number > 0"),
        (["--n-timesteps", "0"], "--n-timesteps must be >= 1, got 0"),
        (["--model-name", "nosuchmodel"], "--model-name: unknown model name 'nosuchmodel'"),
    ],
)
def test_bad_flags_are_usage_errors_before_any_work(tmp_path, capsys, flags, message) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.touch()  # never read: the flags fail first
    with pytest.raises(SystemExit) as exit_info:
        pitch_gap.main(["--checkpoint", str(checkpoint), "--heldout-dir", str(tmp_path), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
