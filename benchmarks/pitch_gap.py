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
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch
from learning_eval import NOISE_SEED, HeldOut, griffin_lim, load_heldout

from flow2gan.cli import RawDescriptionDefaultsHelpFormatter
from flow2gan.config import get_generator_config
from flow2gan.eval.pitch import extract_pitch, pitch_metrics
from flow2gan.features import complex_stft, mel_frontend
from flow2gan.models.token_generator import audio_front_end
from flow2gan.training.condition import make_generator
from flow2gan.weights import load_checkpoint

BANDS_HZ = (0, 500, 1000, 2000, 4000, None)

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
    for item in items:
        ref = item.audio.astype(np.float64)
        with torch.no_grad():
            rng = torch.Generator().manual_seed(NOISE_SEED)
            out = generator.infer(
                item.mel[None], n_timesteps=args.n_timesteps, generator=rng, clamp_pred=True
            )
        out = out[0].double().numpy()[: len(ref)]
        gl = griffin_lim(item, mel).astype(np.float64)
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
    logger.info("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
