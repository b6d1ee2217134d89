"""Per-file objective metrics of a (reference, prediction) pair: PESQ, STOI, MR-STFT, ViSQOL, pitch.

Both signals are mono float arrays at the model rate, trimmed to the shorter length. PESQ (wide-band)
and ViSQOL (speech mode) run at 16 kHz on soxr-resampled copies; STOI and the MR-STFT distance run at
the original rate; the pitch metrics are described in :mod:`flow2gan.eval.pitch`. Resampling uses
soxr (:func:`flow2gan.audio.resample`) where the reference used torchaudio's sinc resampler, so
scores can differ from the reference in the last digits.

PESQ, STOI and the pitch metrics each need an optional package (``pesq``, ``pystoi``, ``torchcrepe``;
all in ``pip install 'flow2gan[eval]'``). When one is missing, only its own metrics are left out, with
one warning per process (:func:`metric_available`); the others are still computed.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flow2gan.audio import resample
from flow2gan.eval.crepe import import_torchcrepe
from flow2gan.eval.pitch import PITCH_KEYS, PitchConfig, pitch_metrics_from_audio

logger = logging.getLogger(__name__)

PESQ_RATE = 16000
PESQ_FAILED = -1.0
# (n_fft, hop, win_length) of the multi-resolution STFT distance (the usual auraloss defaults).
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
STFT_EPS = 1e-8
VISQOL_SPEECH_MODEL = (
    "lattice_tcditugenmeetpackhref_ls2_nl60_lr12_bs2048_learn.005_ep2400_train1_7_raw.tflite"
)


INSTALL_HINT = "pip install 'flow2gan[eval]'; CREPE pitch metrics also: pip install --no-deps torchcrepe"
# Metric group -> (its keys in a score record, the import that must work for it).
OPTIONAL_METRICS: dict[str, tuple[tuple[str, ...], Callable[[], object]]] = {
    "pesq": (("pesq",), lambda: importlib.import_module("pesq")),
    "stoi": (("stoi",), lambda: importlib.import_module("pystoi")),
    "pitch": (PITCH_KEYS, import_torchcrepe),
}


@cache
def missing_dependency(group: str) -> str | None:
    """Why the metrics of ``group`` (a key of ``OPTIONAL_METRICS``) cannot run here, or None.

    The reason is the import error plus the install hint; the import is tried once per process.
    """
    try:
        OPTIONAL_METRICS[group][1]()
    except ImportError as exc:
        return f"{exc} ({INSTALL_HINT})"
    return None


@cache
def metric_available(group: str) -> bool:
    """Whether ``group``'s package imports; the first miss in a process logs one warning naming it."""
    reason = missing_dependency(group)
    if reason is not None:
        keys = ", ".join(OPTIONAL_METRICS[group][0])
        logger.warning("%s metrics (%s) are skipped: %s", group, keys, reason)
    return reason is None


@dataclass(frozen=True)
class MetricsConfig:
    """Which per-file metrics to compute and at what rate the pair is given."""

    sampling_rate: int = 24000
    use_visqol: bool = False
    pitch: bool = True
    device: str = "cpu"
    pesq: bool = True
    stoi: bool = True


def trim_pair(ref: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut two (T,) signals to the shorter length -> two (min T,) float32 arrays."""
    length = min(ref.shape[-1], pred.shape[-1])
    return np.asarray(ref[:length], dtype=np.float32), np.asarray(pred[:length], dtype=np.float32)


def to_16k_padded(ref: np.ndarray, pred: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-length (L,) pair -> both at 16 kHz, right-padded with ``16000 - L`` zeros when L < 16000.

    The pad length is computed from the original-rate length ``L`` (a reference quirk kept on purpose:
    at model rates above 16 kHz, short files stay shorter than one second after padding).
    """
    length = ref.shape[-1]
    ref16 = resample(ref, sr, PESQ_RATE)
    pred16 = resample(pred, sr, PESQ_RATE)
    if length < PESQ_RATE:
        pad = PESQ_RATE - length
        ref16 = np.pad(ref16, (0, pad))
        pred16 = np.pad(pred16, (0, pad))
    return ref16, pred16


def pesq_wb(ref16: np.ndarray, pred16: np.ndarray) -> float:
    """Wide-band PESQ (MOS-LQO) of two 16 kHz (T,) signals.

    Errors detected by the PESQ C code come back as the package's negative error codes (e.g. -7 = no
    utterances detected); any other exception gives -1. Either way the value is averaged like a score.
    """
    from pesq import PesqError, pesq

    try:
        return float(pesq(PESQ_RATE, ref16, pred16, "wb", on_error=PesqError.RETURN_VALUES))
    except Exception as exc:  # the C extension and its wrapper raise assorted types
        logger.warning("PESQ failed (%s); scoring %.0f", exc, PESQ_FAILED)
        return PESQ_FAILED


def stoi_score(ref: np.ndarray, pred: np.ndarray, sr: int) -> float:
    """Classic STOI (``extended=False``) of two equal-length (T,) signals at rate ``sr``."""
    from pystoi import stoi

    return float(stoi(ref.astype(np.float64), pred.astype(np.float64), sr, extended=False))


def stft_magnitude(x: Tensor, n_fft: int, hop: int, win_length: int) -> Tensor:
    """(T,) -> (n_fft // 2 + 1, 1 + T // hop) magnitude ``sqrt(max(|X|^2, 1e-8))``, centred reflect STFT."""
    spec = torch.stft(
        x,
        n_fft,
        hop_length=hop,
        win_length=win_length,
        window=torch.hann_window(win_length, dtype=x.dtype),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=STFT_EPS))


def mr_stft_distance(
    ref: np.ndarray, pred: np.ndarray, resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS
) -> float:
    """Multi-resolution STFT distance of two equal-length (T,) signals (lower is better, 0 = identical).

    For each (n_fft, hop, win) with a periodic Hann window of length ``win``: spectral convergence
    ``||S_ref - S_pred||_F / ||S_ref||_F`` plus log-magnitude distance ``mean|log S_ref - log S_pred|``,
    where ``S = sqrt(max(|STFT|^2, 1e-8))``; the per-resolution sums are averaged over resolutions.
    This equals auraloss ``MultiResolutionSTFTLoss()`` (default arguments) evaluated as (pred, ref).
    """
    ref_t = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32))
    pred_t = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))
    total = 0.0
    for n_fft, hop, win in resolutions:
        ref_mag = stft_magnitude(ref_t, n_fft, hop, win)
        pred_mag = stft_magnitude(pred_t, n_fft, hop, win)
        convergence = torch.linalg.norm(ref_mag - pred_mag) / torch.linalg.norm(ref_mag)
        log_distance = torch.mean(torch.abs(torch.log(ref_mag) - torch.log(pred_mag)))
        total += float(convergence + log_distance)
    return total / len(resolutions)


def visqol_available() -> bool:
    """Whether the ViSQOL Python binding (``visqol.visqol_lib_py``) can be imported."""
    try:
        importlib.import_module("visqol.visqol_lib_py")
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _visqol_api() -> Any:
    """A ViSQOL API object configured for speech mode at 16 kHz (built once per process)."""
    from visqol import visqol_lib_py
    from visqol.pb2 import visqol_config_pb2

    config = visqol_config_pb2.VisqolConfig()
    config.audio.sample_rate = PESQ_RATE
    config.options.use_speech_scoring = True
    config.options.svr_model_path = os.path.join(
        os.path.dirname(visqol_lib_py.__file__), "model", VISQOL_SPEECH_MODEL
    )
    api = visqol_lib_py.VisqolApi()
    api.Create(config)
    return api


def visqol_speech(ref16: np.ndarray, pred16: np.ndarray) -> float:
    """ViSQOL MOS-LQO (speech mode) of two 16 kHz (T,) signals; needs :func:`visqol_available`."""
    result = _visqol_api().Measure(ref16.astype(np.float64), pred16.astype(np.float64))
    return float(result.moslqo)


def score_pair(ref: np.ndarray, pred: np.ndarray, cfg: MetricsConfig = MetricsConfig()) -> dict[str, float]:
    """All enabled metrics of a (T1,) reference and (T2,) prediction at ``cfg.sampling_rate``.

    Keys: ``pesq``, ``stoi``, ``mr_stft``, ``visqol`` (only with ``use_visqol`` and a binding), and the
    pitch keys of :data:`flow2gan.eval.pitch.PITCH_KEYS` (with ``pitch``; NaN when undefined). A metric
    whose optional package is missing is left out (see :func:`metric_available`).
    """
    ref, pred = trim_pair(ref, pred)
    sr = cfg.sampling_rate
    ref16, pred16 = to_16k_padded(ref, pred, sr)
    scores: dict[str, float] = {}
    if cfg.pesq and metric_available("pesq"):
        scores["pesq"] = pesq_wb(ref16, pred16)
    if cfg.stoi and metric_available("stoi"):
        scores["stoi"] = stoi_score(ref, pred, sr)
    scores["mr_stft"] = mr_stft_distance(ref, pred)
    if cfg.use_visqol and visqol_available():
        scores["visqol"] = visqol_speech(ref16, pred16)
    if cfg.pitch and metric_available("pitch"):
        pitch_cfg = PitchConfig(sampling_rate=sr, device=cfg.device)
        scores.update(pitch_metrics_from_audio(ref, pred, pitch_cfg))
    return scores
