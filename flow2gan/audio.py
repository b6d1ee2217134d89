"""Audio I/O: reading (mono, resampled with soxr), atomic writing, peak normalisation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

from flow2gan.weights import atomic_write

logger = logging.getLogger(__name__)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample (T,) or (T, C) float audio with soxr (high quality); identity when rates match."""
    if orig_sr == target_sr:
        return audio
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def not_a_file(path: Path) -> str:
    """Why ``path`` (e.g. listed in a manifest) is no file: "is not a file" or "does not exist", and for a
    relative path the folder it was read from (the current one)."""
    what = "is not a file" if path.exists() else "does not exist"
    return (
        what
        if path.is_absolute()
        else f"{what} (relative paths are read from the current folder, {Path.cwd()})"
    )


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a sound file as float32 (T, C) plus its rate; ``ValueError`` naming the file on failure."""
    if not Path(path).is_file():
        raise ValueError(f"cannot read audio file {path}: it {not_a_file(Path(path))}")
    if Path(path).stat().st_size == 0:
        raise ValueError(f"cannot read audio file {path}: empty file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} is empty")
    if not np.isfinite(data).all():
        raise ValueError(f"audio file {path} contains NaN or inf samples")
    return data, sr


def to_model_rate(data: np.ndarray, sr: int, target_sr: int | None) -> tuple[Tensor, str]:
    """(T, C) audio at ``sr`` -> mono float32 (T',) at ``target_sr`` (channel mean, soxr), plus a note.

    The note says what was done ("resampled from 16000 Hz and downmixed from 2 channels"), or is "".
    """
    mono = data.mean(axis=1, dtype=np.float32)
    done = []
    if target_sr is not None and sr != target_sr:
        mono = resample(mono, sr, target_sr)
        done.append(f"resampled from {sr} Hz to {target_sr} Hz")
    if data.shape[1] > 1:
        done.append(f"downmixed from {data.shape[1]} channels")
    return torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), " and ".join(done)


def load_audio(path: str | Path, target_sr: int | None = None) -> Tensor:
    """Load a file as a mono float32 tensor (T,), channel mean, resampled to ``target_sr`` if given.

    Raises ``ValueError`` naming the file when it cannot be read, is empty or holds NaN/inf samples.
    """
    data, sr = read_audio(path)
    mono, note = to_model_rate(data, sr, target_sr)
    if note:
        logger.debug("%s: %s", path, note)
    return mono


def save_audio(
    path: str | Path, audio: Tensor | np.ndarray, sampling_rate: int, subtype: str = "PCM_16"
) -> None:
    """Write (T,) audio as WAV atomically (:func:`flow2gan.weights.atomic_write`); parents are created."""
    if isinstance(audio, Tensor):
        audio = audio.detach().cpu().float().numpy()
    samples = np.asarray(audio, dtype=np.float32)
    atomic_write(path, lambda tmp: sf.write(tmp, samples, sampling_rate, subtype=subtype, format="WAV"))


def pad_batch(rows: Sequence[Tensor], fill: float = 0.0) -> tuple[Tensor, list[int]]:
    """Stack tensors (..., T_i) into (B, ..., max T_i) padded with ``fill``; returns it and the T_i."""
    lengths = [row.shape[-1] for row in rows]
    out = torch.full((len(rows), *rows[0].shape[:-1], max(lengths)), fill, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, ..., : lengths[i]] = row
    return out, lengths


def peak_normalize(audio: Tensor, gain_db: float) -> Tensor:
    """Scale so that max |audio| equals ``gain_db`` dBFS (sox ``norm``); silence is returned unchanged."""
    peak = audio.abs().max()
    if peak <= 0:
        return audio
    return audio * (10.0 ** (gain_db / 20.0) / peak)
