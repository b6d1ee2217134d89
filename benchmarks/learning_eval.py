"""Held-out scoring of the learning benchmark (``learning.py``): the files, the five metrics, the baselines.

Held-out files are loaded at the model rate and peak-normalised to -3 dBFS; a generator is scored with a
fixed noise seed; the classical baselines are the mel pseudo-inverse with random phase and with 32 fast
Griffin-Lim iterations (momentum 0.99, librosa); a token model's baseline is EnCodec's own decoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flow2gan.audio import load_audio, peak_normalize
from flow2gan.codec import EncodecTokenizer
from flow2gan.eval.metrics import MetricsConfig, score_pair
from flow2gan.eval.pitch import PitchConfig, PitchTrack, extract_pitch, pitch_metrics
from flow2gan.features import LogMelSpectrogram
from flow2gan.models.generator import MelAudioGenerator

METRICS = ("pesq", "stoi", "vuv_f1", "periodicity", "mrstft")
GL_ITERS = 32
GL_MOMENTUM = 0.99
NOISE_SEED = 1234


@dataclass(frozen=True)
class HeldOut:
    """One held-out file: name, reference audio (T,) at the model rate, its log-mel (or EnCodec codes
    for a token model) and CREPE track."""

    name: str
    audio: np.ndarray
    mel: torch.Tensor
    pitch: PitchTrack | None
    pitch_cfg: PitchConfig
    pitch_samples: int


def heldout_paths(folder: Path) -> list[Path]:
    """The held-out audio files of ``folder``: its .wav and .flac files (not below it), sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac") and p.is_file())


def load_heldout(
    folder: Path, cond_fn: torch.nn.Module, sampling_rate: int, args: argparse.Namespace
) -> list[HeldOut]:
    """Held-out files at the model rate, peak-normalised to −3 dBFS, with their condition and pitch track.

    CREPE runs on the first ``--pitch-seconds`` of each file only, with the ``--pitch-model`` network
    (on one CPU thread ``tiny`` takes ~0.4 s per audio second, ``full`` ~9 s).
    """
    paths = heldout_paths(folder)
    if not paths:
        raise SystemExit(f"no audio files in {folder}")
    cfg = PitchConfig(sampling_rate=sampling_rate, model=args.pitch_model)
    n_pitch = int(args.pitch_seconds * sampling_rate)
    items = []
    for path in tqdm(paths, desc=f"held-out {folder.name}", unit="file", leave=False):
        audio = peak_normalize(load_audio(path, sampling_rate), -3.0).numpy()
        try:
            track = extract_pitch(audio[:n_pitch], cfg) if args.pitch else None
        except ValueError as e:  # too short for CREPE
            raise ValueError(f"{path}: {e}") from e
        cond = cond_fn(torch.from_numpy(audio)[None])[0]
        items.append(HeldOut(path.stem, audio, cond, track, cfg, n_pitch))
    return items


def score(item: HeldOut, pred: np.ndarray, sampling_rate: int, pitch: bool) -> dict[str, float]:
    """The benchmark's five metrics of one vocoded file (V/UV F1 and periodicity NaN without ``pitch``)."""
    pred = np.asarray(pred[: item.audio.shape[-1]], dtype=np.float32)
    s = score_pair(item.audio, pred, MetricsConfig(sampling_rate=sampling_rate, pitch=False))
    out = {"pesq": s["pesq"], "stoi": s["stoi"], "mrstft": s["mr_stft"]}
    if item.pitch is None or not pitch:
        return {**out, "vuv_f1": math.nan, "periodicity": math.nan}
    p = pitch_metrics(item.pitch, extract_pitch(pred[: item.pitch_samples], item.pitch_cfg))
    return {**out, "vuv_f1": p["vuv_f1"], "periodicity": p["periodicity"]}


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-metric mean over files, ignoring NaN (a metric that is NaN everywhere stays NaN, silently)."""
    out = {}
    for k in METRICS:
        values = np.array([r[k] for r in rows], dtype=np.float64)
        finite = values[~np.isnan(values)]
        out[k] = float(finite.mean()) if finite.size else math.nan
    return out


@torch.no_grad()
def eval_generator(
    generator: MelAudioGenerator, items: list[HeldOut], n_steps: int, pitch: bool = True
) -> dict[str, float]:
    """Vocode every held-out mel with ``n_steps`` Euler steps (fixed noise seed) and average the metrics."""
    was_training = generator.training
    generator.eval()
    rows = [
        score(item, vocode(generator, item, n_steps), generator.config.sampling_rate, pitch) for item in items
    ]
    generator.train(was_training)
    return mean_metrics(rows)


def vocode(generator: torch.nn.Module, item: HeldOut, n_timesteps: int, seed: int = NOISE_SEED) -> np.ndarray:
    """The generator's output for ``item``'s condition (clamped, start noise seeded), trimmed to its
    audio -> (T,) float64."""
    with torch.no_grad():
        rng = torch.Generator().manual_seed(seed)
        out = generator.infer(item.mel[None], n_timesteps=n_timesteps, generator=rng, clamp_pred=True)
    return out[0].double().numpy()[: len(item.audio)]


def mel_magnitude(item: HeldOut, mel: LogMelSpectrogram) -> np.ndarray:
    """Linear magnitude (n_fft // 2 + 1, F) from the log-mel by the filterbank's pseudo-inverse, ≥ 0."""
    fb = mel.mel_scale.fb.double().numpy()  # (n_freqs, n_mels)
    mag = np.linalg.pinv(fb.T) @ np.exp(item.mel.double().numpy())
    return np.maximum(mag, 0.0)


def griffin_lim(item: HeldOut, mel: LogMelSpectrogram, iterations: int = GL_ITERS) -> np.ndarray:
    """The Griffin-Lim baseline of one file: fast Griffin-Lim (librosa, momentum 0.99) on the mel's
    pseudo-inverse magnitudes, ``iterations`` times, from a seeded random phase -> (T,) float32."""
    import librosa

    pred = librosa.griffinlim(
        mel_magnitude(item, mel),
        n_iter=iterations,
        hop_length=mel.hop_length,
        n_fft=mel.n_fft,
        momentum=GL_MOMENTUM,
        length=item.audio.shape[-1],
        random_state=NOISE_SEED,
    )
    return pred.astype(np.float32)


def eval_classical(items: list[HeldOut], mel: LogMelSpectrogram, iterations: int) -> dict[str, float]:
    """Random phase (``iterations`` 0) or fast Griffin-Lim (librosa, momentum 0.99) from the mel."""
    import librosa

    rows = []
    rng = np.random.default_rng(NOISE_SEED)
    for item in items:
        if iterations == 0:
            mag = mel_magnitude(item, mel)
            phase = np.exp(2j * np.pi * rng.random(mag.shape))
            pred = librosa.istft(
                mag * phase, hop_length=mel.hop_length, n_fft=mel.n_fft, length=item.audio.shape[-1]
            )
        else:
            pred = griffin_lim(item, mel, iterations)
        rows.append(score(item, pred.astype(np.float32), mel.sampling_rate, True))
    return mean_metrics(rows)


@torch.no_grad()
def eval_codec(items: list[HeldOut], codec: EncodecTokenizer) -> dict[str, float]:
    """EnCodec's own decoder of the held-out codes (the token model's baseline)."""
    rows = [score(item, codec.decode(item.mel[None])[0].numpy(), codec.sampling_rate, True) for item in items]
    return mean_metrics(rows)


def at_bandwidth(items: list[HeldOut], codec: EncodecTokenizer, bandwidth: float) -> list[HeldOut]:
    """The held-out items with their codes re-made at ``bandwidth`` kbps."""
    return [
        dataclasses.replace(item, mel=codec.encode(torch.from_numpy(item.audio)[None], bandwidth)[0])
        for item in items
    ]
