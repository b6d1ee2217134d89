"""Audio I/O: reading (mono, resampled with soxr), atomic writing, peak normalisation."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample (T,) or (T, C) float audio with soxr (high quality); identity when rates match."""
    if orig_sr == target_sr:
        return audio
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a sound file as float32 (T, C) plus its rate; ``ValueError`` naming the file on failure."""
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} is empty")
    if not np.isfinite(data).all():
        raise ValueError(f"audio file {path} contains NaN or inf samples")
    return data, sr


def load_audio(path: str | Path, target_sr: int | None = None) -> Tensor:
    """Load a file as a mono float32 tensor (T,), channel mean, resampled to ``target_sr`` if given."""
    data, sr = read_audio(path)
    mono = data.mean(axis=1, dtype=np.float32)
    if target_sr is not None and sr != target_sr:
        logger.debug("resampling %s from %d Hz to %d Hz", path, sr, target_sr)
        mono = resample(mono, sr, target_sr)
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))


def save_audio(
    path: str | Path, audio: Tensor | np.ndarray, sampling_rate: int, subtype: str = "PCM_16"
) -> None:
    """Write (T,) audio atomically (temp file in the same folder, then rename); parents are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(audio, Tensor):
        audio = audio.detach().cpu().float().numpy()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.asarray(audio, dtype=np.float32), sampling_rate, subtype=subtype, format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def peak_normalize(audio: Tensor, gain_db: float) -> Tensor:
    """Scale so that max |audio| equals ``gain_db`` dBFS (sox ``norm``); silence is returned unchanged."""
    peak = audio.abs().max()
    if peak <= 0:
        return audio
    return audio * (10.0 ** (gain_db / 20.0) / peak)
