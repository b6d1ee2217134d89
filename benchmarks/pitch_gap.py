"""Where a trained generator's pitch errors are: frequency band, magnitude or phase (no training).

``python benchmarks/pitch_gap.py --checkpoint OUT/stage2-averaged.pt --heldout-dir DIR``

Vocodes the held-out files as the learning benchmark does (``learning_eval``: peak −3 dBFS, seeded start
noise, CREPE on the first ``--pitch-seconds``) and scores V/UV F1 and periodicity error of hybrids of the
output and the reference:

* the output below ``--split-hz`` with the reference above it, and the other way round (zero-phase
  brick-wall split of the whole file);
* below ``--split-hz`` only, in an STFT of ``--n-fft`` (hop n_fft / 4): the output's magnitude with
  the reference's phase, and the reference's magnitude with the output's phase.

Then the phase-derivative errors per band, for the output and for Griffin-Lim (the learning benchmark's
baseline): ``1 − cos`` of the instantaneous-frequency (frame to frame) and group-delay (bin to bin)
errors, weighted by ``|X[k] X[k−1]|^0.5`` of the reference, as ``spectral_losses.phase_derivative_loss``
with ``weight_power`` 0.5, at n_fft 512 and 1024. benchmarks/README.md ("Round J") has what it found.

Last, the frame grid (benchmarks/README.md, "Round P"): where the mel frames repeat exactly, a
generator that ignores its start noise repeats its output every mel hop, whose spectrum then has lines
only at multiples of ``sampling_rate / mel_hop_length`` (93.75 Hz at 24 kHz). How close a generator
comes to that:

* on the held-out files, the share of the power between 60 Hz and 1 kHz within ±3 Hz of that grid's
  lines (8192-sample Hann frames), for the reference, the output and Griffin-Lim, beside the grid's
  share of the bins (chance), and the power of the difference between the outputs of two start-noise
  seeds below 1 kHz, relative to the output's (dB; about +3 dB for two uncorrelated outputs);
* on stationary harmonic tones, f0 100–296 Hz (1/h amplitudes up to 4 kHz, peak 0.5, 2 s, a 1-s
  analysis frame in the middle), the share of the power between 60 Hz and 1 kHz within ±5 Hz of the
  true harmonics, and the share on the grid's lines that are not harmonics.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch
from learning_eval import NOISE_SEED, HeldOut, griffin_lim, load_heldout, vocode

from flow2gan.cli import RawDescriptionDefaultsHelpFormatter
from flow2gan.config import get_generator_config
from flow2gan.eval.pitch import PitchConfig, extract_pitch, pitch_metrics
from flow2gan.features import complex_stft, mel_frontend
from flow2gan.models.token_generator import audio_front_end
from flow2gan.training.condition import make_generator
from flow2gan.weights import load_checkpoint

BANDS_HZ = (0, 500, 1000, 2000, 4000, None)
COMB_BAND_HZ = (60.0, 1000.0)  # where the pitch gap is (round J) and the frame grid's lowest lines
SPEECH_COMB = (8192, 3.0)  # analysis frame (samples, hop an eighth) and line half-width (Hz), speech
TONE_COMB = (24000, 5.0)  # the same for the stationary tones: 1-s frames at 24 kHz
TONE_F0S = tuple(float(f) for f in np.arange(100.0, 300.0, 7.0))
TONE_SECONDS = 2.0

logger = logging.getLogger("pitch_gap")


def band_split(x: np.ndarray, split_hz: float, sampling_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-phase brick-wall split of (T,) into the parts below and above ``split_hz``."""
    spec = np.fft.rfft(x)
    low = np.fft.irfft(np.where(np.fft.rfftfreq(len(x), 1 / sampling_rate) < split_hz, spec, 0), len(x))
    return low, x - low


def swap_below(
    mag_from: np.ndarray, phase_from: np.ndarray, rest: np.ndarray, split_hz: float, sr: int, n_fft: int
) -> np.ndarray:
    """Below ``split_hz``: |STFT| of ``mag_from`` with the phase of ``phase_from``; above: ``rest``'s STFT."""
    window = torch.hann_window(n_fft, dtype=torch.float64)
    stft = [
        complex_stft(torch.from_numpy(x), n_fft, n_fft // 4, window) for x in (mag_from, phase_from, rest)
    ]
    low = torch.from_numpy(np.fft.rfftfreq(n_fft, 1 / sr) < split_hz)[:, None]
    mixed = torch.where(low, stft[0].abs() * torch.exp(1j * stft[1].angle()), stft[2])
    return torch.istft(mixed, n_fft, n_fft // 4, n_fft, window, length=len(rest)).numpy()


def phase_errors(ref: np.ndarray, out: np.ndarray, n_fft: int, sr: int) -> dict[str, np.ndarray]:
    """Per band of BANDS_HZ: [weighted IF error sum, weight sum, weighted GD error sum, weight sum]."""
    window = torch.hann_window(n_fft, dtype=torch.float64)
    x, y = (complex_stft(torch.from_numpy(a), n_fft, n_fft // 4, window).numpy() for a in (ref, out))
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    sums = {}
    for dim, (px, py) in enumerate(
        (
            (x[:, 1:] * x[:, :-1].conj(), y[:, 1:] * y[:, :-1].conj()),
            (x[1:] * x[:-1].conj(), y[1:] * y[:-1].conj()),
        )
    ):
        weight = np.abs(px) ** 0.5
        error = 1 - np.cos(np.angle(py) - np.angle(px))
        f = freqs if dim == 0 else freqs[1:]
        for lo, hi in zip(BANDS_HZ[:-1], BANDS_HZ[1:], strict=True):
            rows = (f >= lo) & (f < (hi or np.inf))
            entry = sums.setdefault(band_name(lo, hi), np.zeros(4))
            entry[2 * dim] += (weight[rows] * error[rows]).sum()
            entry[2 * dim + 1] += weight[rows].sum()
    return sums


def comb_share(
    x: np.ndarray,
    spacing_hz: float,
    sr: int,
    frame: tuple[int, float] = SPEECH_COMB,
    exclude_hz: float | None = None,
) -> float:
    """Share of the power in COMB_BAND_HZ within ± ``frame[1]`` Hz of the multiples of ``spacing_hz``.

    Power summed over Hann frames of ``frame[0]`` samples (hop an eighth; one frame if ``x`` is that
    short or shorter, zero-padded). Bins also within the half-width of a multiple of ``exclude_hz`` are
    left out of the numerator (the frame grid's lines that are not a tone's harmonics). x: (T,) -> [0, 1].
    """
    n_fft, half_width = frame
    x = np.pad(x, (0, max(0, n_fft - len(x))))
    starts = range(0, len(x) - n_fft + 1, n_fft // 8)
    frames = np.stack([x[i : i + n_fft] for i in starts]) * np.hanning(n_fft)
    power = (np.abs(np.fft.rfft(frames, axis=-1)) ** 2).sum(0)
    freqs, band = comb_bins(n_fft, sr)
    lines = _near_multiples(freqs, spacing_hz, half_width)
    if exclude_hz is not None:
        lines &= ~_near_multiples(freqs, exclude_hz, half_width)
    return float(power[band & lines].sum() / power[band].sum())


def comb_bins(n_fft: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """The rfft bin frequencies of an ``n_fft`` frame (Hz) and whether each lies in COMB_BAND_HZ."""
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    return freqs, (freqs >= COMB_BAND_HZ[0]) & (freqs < COMB_BAND_HZ[1])


def _near_multiples(freqs: np.ndarray, spacing_hz: float, half_width: float) -> np.ndarray:
    """Whether each frequency lies within ``half_width`` of a positive multiple of ``spacing_hz``."""
    nearest = np.maximum(np.round(freqs / spacing_hz), 1) * spacing_hz
    return np.abs(freqs - nearest) <= half_width


def harmonic_tone(f0: float, sr: int, seconds: float = TONE_SECONDS) -> np.ndarray:
    """A stationary voiced-like tone: harmonics h·f0 up to 4 kHz at amplitude 1/h and phase 0.3 h²,
    peak 0.5 -> (seconds · sr,) float32."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * h * f0 * t + 0.3 * h * h) / h for h in range(1, int(4000 / f0) + 1))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def band_name(lo: int, hi: int | None) -> str:
    return f"{lo}-{hi} Hz" if hi else f"> {lo} Hz"


def pitch_of(item: HeldOut, audio: np.ndarray) -> tuple[float, float]:
    """(V/UV F1, periodicity error) of ``audio`` against the reference's CREPE track."""
    m = pitch_metrics(
        item.pitch, extract_pitch(audio[: item.pitch_samples].astype(np.float32), item.pitch_cfg)
    )
    return m["vuv_f1"], m["periodicity"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="generator checkpoint (.pt)")
    p.add_argument("--heldout-dir", type=Path, required=True, help="folder of .wav/.flac files")
    p.add_argument(
        "--model-name", default="mel_24k_small_envelope", help="generator config name or JSON file"
    )
    p.add_argument("--n-timesteps", type=int, default=4, help="Euler steps")
    p.add_argument("--split-hz", type=float, default=1000.0, help="band edge of the hybrids")
    p.add_argument("--n-fft", type=int, default=512, help="STFT size of the magnitude/phase swap")
    p.add_argument("--pitch-model", default="tiny", choices=["tiny", "full"], help="CREPE model size")
    p.add_argument(
        "--pitch-seconds",
        type=float,
        default=3.0,
        help="CREPE on the first s of each file (the first table; the phase errors use whole files)",
    )
    args = p.parse_args(argv)
    for flag, path, ok in (
        ("--checkpoint", args.checkpoint, args.checkpoint.is_file()),
        ("--heldout-dir", args.heldout_dir, args.heldout_dir.is_dir()),
    ):
        if not ok:
            p.error(f"{flag} {path} does not exist")
    try:
        config = get_generator_config(args.model_name)
    except (OSError, ValueError) as e:
        p.error(f"--model-name: {e}")
    if not (math.isfinite(args.split_hz) and 0 < args.split_hz < config.sampling_rate / 2):
        p.error(f"--split-hz must lie between 0 and {config.sampling_rate / 2:g} Hz, got {args.split_hz}")
    if not (math.isfinite(args.pitch_seconds) and args.pitch_seconds > 0):
        p.error(f"--pitch-seconds must be a finite number > 0, got {args.pitch_seconds}")
    for flag, value, least in (("--n-fft", args.n_fft, 16), ("--n-timesteps", args.n_timesteps, 1)):
        if value < least:
            p.error(f"{flag} must be >= {least}, got {value}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    generator = make_generator(config, None)
    sr, split = config.sampling_rate, args.split_hz
    pitch_args = argparse.Namespace(pitch=1, pitch_model=args.pitch_model, pitch_seconds=args.pitch_seconds)
    try:
        load_checkpoint(args.checkpoint, generator)
        items = load_heldout(args.heldout_dir, audio_front_end(generator, None, None), sr, pitch_args)
    except ValueError as e:  # a checkpoint of another model, a file shorter than --pitch-seconds
        p.error(str(e))
    generator.eval()
    mel = mel_frontend(config)
    scores: dict[str, list[tuple[float, float]]] = {}
    errors: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    grid_hz = sr / config.mel_hop_length
    grid_rows: list[list[float]] = []
    seed_change: list[float] = []
    for item in items:
        ref = item.audio.astype(np.float64)
        out = vocode(generator, item, args.n_timesteps)
        gl = griffin_lim(item, mel).astype(np.float64)
        grid_rows.append([comb_share(a, grid_hz, sr) for a in (ref, out, gl)])
        reseeded = band_split(out - vocode(generator, item, args.n_timesteps, NOISE_SEED + 1), 1000.0, sr)[0]
        seed_change.append((reseeded**2).sum() / (band_split(out, 1000.0, sr)[0] ** 2).sum())
        (out_low, out_high), (ref_low, ref_high) = band_split(out, split, sr), band_split(ref, split, sr)
        hybrids = {
            "output": out,
            "griffin-lim": gl,
            f"output < {split:g} Hz, reference above": out_low + ref_high,
            f"reference < {split:g} Hz, output above": ref_low + out_high,
            f"output magnitude, reference phase < {split:g} Hz": swap_below(
                out, ref, out, split, sr, args.n_fft
            ),
            f"reference magnitude, output phase < {split:g} Hz": swap_below(
                ref, out, out, split, sr, args.n_fft
            ),
        }
        for name, audio in hybrids.items():
            scores.setdefault(name, []).append(pitch_of(item, audio))
        for name, audio in (("output", out), ("griffin-lim", gl)):
            for n_fft in (512, 1024):
                for band, sums in phase_errors(ref, audio, n_fft, sr).items():
                    errors.setdefault((name, n_fft), {}).setdefault(band, np.zeros(4))
                    errors[(name, n_fft)][band] += sums
    lines = ["| audio | V/UV F1 ↑ | periodicity ↓ |", "|---|---|---|"]
    lines += [f"| {name} | {np.mean(v, 0)[0]:.3f} | {np.mean(v, 0)[1]:.3f} |" for name, v in scores.items()]
    bands = [band_name(lo, hi) for lo, hi in zip(BANDS_HZ[:-1], BANDS_HZ[1:], strict=True)]
    lines += [
        "",
        "| phase error (IF / GD) | n_fft | " + " | ".join(bands) + " |",
        "|---|---|" + "---|" * len(bands),
    ]
    for (name, n_fft), per_band in errors.items():
        cells = [f"{s[0] / s[1]:.3f} / {s[2] / s[3]:.3f}" for s in (per_band[b] for b in bands)]
        lines.append(f"| {name} | {n_fft} | " + " | ".join(cells) + " |")
    lines += ["", *grid_table(np.mean(grid_rows, 0), np.mean(seed_change), grid_hz, sr), ""]
    lines += tone_table(generator, mel, args.n_timesteps, grid_hz)
    logger.info("\n".join(lines))


def grid_table(shares: np.ndarray, seed_change: float, grid_hz: float, sr: int) -> list[str]:
    """Markdown rows: the held-out files' mean power shares on the frame grid (reference, output,
    Griffin-Lim), the grid's share of the bins, and the mean power ratio ``seed_change`` of the
    difference between two noise seeds' outputs to the output, below 1 kHz, in dB."""
    lo, hi = COMB_BAND_HZ
    freqs, band = comb_bins(SPEECH_COMB[0], sr)
    chance = _near_multiples(freqs[band], grid_hz, SPEECH_COMB[1]).mean()
    lines = [f"| audio | power {lo:g}–{hi:g} Hz on the {grid_hz:g} Hz frame grid |", "|---|---|"]
    names = ("reference", "output", "griffin-lim", "(the grid's share of the bins: chance)")
    lines += [f"| {name} | {share:.3f} |" for name, share in zip(names, [*shares, chance], strict=True)]
    if seed_change > 0:
        seeds = f"is {10 * np.log10(seed_change):+.1f} dB relative to the output"
    else:
        seeds = "is zero: the output does not depend on the noise"
    return [*lines, "", f"two start-noise seeds: their outputs' difference below 1 kHz {seeds}"]


def tone_table(
    generator: torch.nn.Module, mel: torch.nn.Module, n_timesteps: int, grid_hz: float
) -> list[str]:
    """Markdown rows: mean shares of the stationary TONE_F0S tones' power near their harmonics and on
    the frame grid's other lines, for the reference, the output and Griffin-Lim."""
    sr = generator.config.sampling_rate
    no_pitch = PitchConfig(sampling_rate=sr)  # HeldOut's pitch fields, not read here
    cond_fn = audio_front_end(generator, None, None)
    shares: dict[str, list[tuple[float, float]]] = {}
    for f0 in TONE_F0S:
        audio = harmonic_tone(f0, sr)
        item = HeldOut(f"{f0:g} Hz", audio, cond_fn(torch.from_numpy(audio)[None])[0], None, no_pitch, 0)
        signals = {
            "reference": audio.astype(np.float64),
            "output": vocode(generator, item, n_timesteps),
            "griffin-lim": griffin_lim(item, mel).astype(np.float64),
        }
        for name, x in signals.items():
            middle = x[len(x) // 4 : len(x) // 4 + TONE_COMB[0]]
            shares.setdefault(name, []).append(
                (comb_share(middle, f0, sr, TONE_COMB), comb_share(middle, grid_hz, sr, TONE_COMB, f0))
            )
    lines = [
        f"| stationary tones, f0 {TONE_F0S[0]:g}–{TONE_F0S[-1]:g} Hz | near the harmonics ↑ "
        f"| on the frame grid, off the harmonics ↓ |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {np.mean(v, 0)[0]:.3f} | {np.mean(v, 0)[1]:.3f} |" for name, v in shares.items()]
    return lines


if __name__ == "__main__":
    sys.exit(main())
