"""CREPE pitch, periodicity and voicing metrics (the CARGAN / PeriodWave evaluation protocol).

Per signal: resample to 16 kHz, reflect-pad ``(1024 - hop16) // 2`` samples per side, run the
torchcrepe ``full`` model (hop ``int(hop * 16000 / sr)``, 50-550 Hz, viterbi decoding, no extra
padding), zero the periodicity of frames quieter than -60 dB (A-weighted), linearly resize both
tracks to ``T // hop`` frames when the count differs (pitch in log2), and mark voiced frames with
torchcrepe's hysteresis thresholding (unvoiced pitch = NaN).

Per (reference, prediction) pair: periodicity RMSE over all frames, pitch RMSE in cents over
frames voiced in both, and V/UV precision / recall / F1 with the reference voicing as the truth.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from flow2gan.audio import resample
from flow2gan.eval.crepe import import_torchcrepe

CREPE_RATE = 16000
CREPE_WINDOW = 1024
PITCH_KEYS = ("periodicity", "pitch_rmse", "vuv_f1", "vuv_precision", "vuv_recall")


@dataclass(frozen=True)
class PitchConfig:
    """Settings of the CREPE protocol; ``hop_length`` is the model's frame hop at ``sampling_rate``."""

    sampling_rate: int = 24000
    hop_length: int = 256
    fmin: float = 50.0
    fmax: float = 550.0
    model: str = "full"
    batch_size: int = 1024
    silence_db: float = -60.0
    device: str = "cpu"

    @property
    def crepe_hop(self) -> int:
        """CREPE hop at 16 kHz: ``int(hop_length * 16000 / sampling_rate)`` (170 for 256 @ 24 kHz)."""
        return int(self.hop_length * CREPE_RATE / self.sampling_rate)

    @property
    def crepe_pad(self) -> int:
        """Reflect padding per side at 16 kHz: ``(1024 - crepe_hop) // 2`` (427 for 24 kHz)."""
        return (CREPE_WINDOW - self.crepe_hop) // 2


@dataclass(frozen=True)
class PitchTrack:
    """Frame-level pitch in Hz (NaN = unvoiced) and periodicity, both (frames,) float32."""

    pitch: Tensor
    periodicity: Tensor


def resize_track(pitch: Tensor, periodicity: Tensor, frames: int) -> tuple[Tensor, Tensor]:
    """Linearly resample (1, F) pitch (in log2) and periodicity to (1, frames)."""
    log_pitch = F.interpolate(torch.log2(pitch)[None], size=frames, mode="linear", align_corners=False)[0]
    periodicity = F.interpolate(periodicity[None], size=frames, mode="linear", align_corners=False)[0]
    return 2.0**log_pitch, periodicity


def extract_pitch(audio: np.ndarray | Tensor, cfg: PitchConfig = PitchConfig()) -> PitchTrack:
    """(T,) audio at ``cfg.sampling_rate`` -> thresholded CREPE track of ``T // hop_length`` frames."""
    crepe = import_torchcrepe()
    if isinstance(audio, Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    frames = audio.shape[-1] // cfg.hop_length
    audio16 = torch.from_numpy(np.ascontiguousarray(resample(audio, cfg.sampling_rate, CREPE_RATE)))
    if frames < 1 or audio16.shape[-1] <= cfg.crepe_pad:
        raise ValueError(f"audio of {audio.shape[-1]} samples is too short for the pitch metrics")
    audio16 = F.pad(audio16[None, None], (cfg.crepe_pad, cfg.crepe_pad), mode="reflect")[
        0
    ]  # (1, T16 + 2 pad)
    pitch, periodicity = crepe.predict(
        audio16,
        CREPE_RATE,
        cfg.crepe_hop,
        cfg.fmin,
        cfg.fmax,
        cfg.model,
        return_periodicity=True,
        batch_size=cfg.batch_size,
        device=cfg.device,
        pad=False,
    )
    periodicity = crepe.threshold.Silence(cfg.silence_db)(
        periodicity, audio16, CREPE_RATE, cfg.crepe_hop, pad=False
    )
    if pitch.shape[-1] != frames:
        pitch, periodicity = resize_track(pitch, periodicity, frames)
    with warnings.catch_warnings():  # all-unvoiced input: nanmean / nanstd of an empty selection
        warnings.simplefilter("ignore", RuntimeWarning)
        pitch = crepe.threshold.Hysteresis()(pitch, periodicity)
    return PitchTrack(pitch.reshape(-1).float(), periodicity.reshape(-1).float())


def _ratio(num: int, den: int) -> float:
    """``num / den`` or NaN when the denominator is zero."""
    return num / den if den > 0 else math.nan


def pitch_metrics(ref: PitchTrack, pred: PitchTrack) -> dict[str, float]:
    """Periodicity RMSE, pitch RMSE (cents) and V/UV precision/recall/F1 of two equal-length tracks."""
    if ref.pitch.shape != pred.pitch.shape:
        raise ValueError(
            f"pitch tracks differ in length: {tuple(ref.pitch.shape)} vs {tuple(pred.pitch.shape)}"
        )
    ref_voiced = ~torch.isnan(ref.pitch)
    pred_voiced = ~torch.isnan(pred.pitch)
    both = ref_voiced & pred_voiced
    true_pos = int(both.sum())
    false_pos = int((pred_voiced & ~ref_voiced).sum())
    false_neg = int((ref_voiced & ~pred_voiced).sum())
    cents = 1200.0 * (torch.log2(ref.pitch[both]) - torch.log2(pred.pitch[both]))
    return {
        "periodicity": float(torch.sqrt(torch.mean((ref.periodicity - pred.periodicity) ** 2))),
        "pitch_rmse": float(torch.sqrt(torch.mean(cents**2))) if true_pos > 0 else math.nan,
        "vuv_f1": _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg),
        "vuv_precision": _ratio(true_pos, true_pos + false_pos),
        "vuv_recall": _ratio(true_pos, true_pos + false_neg),
    }


def pitch_metrics_from_audio(
    ref: np.ndarray, pred: np.ndarray, cfg: PitchConfig = PitchConfig()
) -> dict[str, float]:
    """Pitch / periodicity / V/UV metrics of two (T,) signals of equal length at ``cfg.sampling_rate``."""
    return pitch_metrics(extract_pitch(ref, cfg), extract_pitch(pred, cfg))
