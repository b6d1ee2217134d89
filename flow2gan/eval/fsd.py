"""Fréchet Speech Distance: Fréchet distance between Gaussians fitted to wav2vec 2.0 utterance embeddings.

Audio is read with soundfile (channel mean), resampled to 16 kHz, fed through a local
``facebook/wav2vec2-base`` copy (HF ``Wav2Vec2FeatureExtractor`` + ``Wav2Vec2Model``), and the time
mean of ``last_hidden_state`` is the 768-d utterance embedding. ``transformers`` is optional and only
imported when an embedder is built.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from flow2gan.audio import read_audio, resample

logger = logging.getLogger(__name__)

FSD_RATE = 16000
SQRTM_JITTER = 1e-6
MAX_IMAG = 1e-3
_TRANSFORMERS_MISSING = (
    "FSD needs the optional 'transformers' package (pip install transformers); "
    "run without --fsd-model-path to skip it"
)


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to (N, D) and (M, D) embeddings (N, M >= 2).

    ``|mu_r - mu_f|^2 + tr(S_r + S_f - 2 sqrt(S_r S_f))`` with ``np.cov`` covariances; if the matrix
    square root is not finite, ``1e-6 * I`` is added to both covariances; a complex root is reduced to
    its real part (``ValueError`` when a diagonal imaginary part exceeds 1e-3).
    """
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings per set, got {real.shape[0]} and {fake.shape[0]}")
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    mu_r, mu_f = real.mean(axis=0), fake.mean(axis=0)
    cov_r, cov_f = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(fake, rowvar=False))
    covmean = scipy.linalg.sqrtm(cov_r @ cov_f)
    if not np.isfinite(covmean).all():
        logger.warning(
            "sqrtm of the covariance product is not finite; adding %g to the diagonals", SQRTM_JITTER
        )
        offset = np.eye(cov_r.shape[0]) * SQRTM_JITTER
        covmean = scipy.linalg.sqrtm((cov_r + offset) @ (cov_f + offset))
    if np.iscomplexobj(covmean):
        max_imag = np.max(np.abs(np.diagonal(covmean).imag))
        if max_imag > MAX_IMAG:
            raise ValueError(f"matrix square root has a large imaginary component ({max_imag:.3g})")
        covmean = covmean.real
    diff = mu_r - mu_f
    return float(diff @ diff + np.trace(cov_r) + np.trace(cov_f) - 2.0 * np.trace(covmean))


def fsd_unavailable_reason(model_path: str | Path) -> str | None:
    """Why FSD cannot run here (``transformers`` missing, no model directory), or None when it can."""
    if importlib.util.find_spec("transformers") is None:
        return _TRANSFORMERS_MISSING
    if not Path(model_path).is_dir():
        return f"wav2vec2 model directory not found: {model_path}"
    return None


def load_fsd_audio(path: str | Path) -> np.ndarray:
    """Read a file as mono (channel mean) float32 at 16 kHz -> (T16,)."""
    data, sr = read_audio(path)
    return resample(data.mean(axis=1, dtype=np.float32), sr, FSD_RATE)


class Wav2Vec2Embedder:
    """Utterance embeddings (768,) from a local wav2vec2-base directory (needs ``transformers``)."""

    def __init__(self, model_path: str | Path, device: str = "cpu") -> None:
        try:
            from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model
        except ImportError as exc:
            raise ImportError(_TRANSFORMERS_MISSING) from exc
        if not Path(model_path).is_dir():
            raise FileNotFoundError(f"wav2vec2 model directory not found: {model_path}")
        self.device = torch.device(device)
        self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(model_path))
        self.model = Wav2Vec2Model.from_pretrained(str(model_path)).to(self.device).eval()

    @torch.inference_mode()
    def embed(self, audio16: np.ndarray) -> np.ndarray:
        """(T16,) float audio at 16 kHz -> (hidden,) time-mean of ``last_hidden_state``."""
        inputs = self.extractor(audio16, sampling_rate=FSD_RATE, return_tensors="pt")
        hidden = self.model(inputs.input_values.to(self.device)).last_hidden_state  # (1, frames, hidden)
        return hidden.mean(dim=1)[0].float().cpu().numpy()

    def embed_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Embed each file -> (len(paths), hidden)."""
        return np.stack([self.embed(load_fsd_audio(path)) for path in paths])


def compute_fsd(
    real_paths: Sequence[str | Path],
    fake_paths: Sequence[str | Path],
    model_path: str | Path,
    device: str = "cpu",
) -> float:
    """FSD between the wav2vec2 embeddings of two file lists (at least 2 files each)."""
    embedder = Wav2Vec2Embedder(model_path, device)
    return frechet_distance(embedder.embed_files(real_paths), embedder.embed_files(fake_paths))
