"""Run an exported flow2gan ONNX sampler with onnxruntime and NumPy only (no torch needed).

from flow2gan.onnx import OnnxVocoder
audio = OnnxVocoder("model.onnx").infer(mel)   # mel: (B, n_mels, F) or (n_mels, F), a natural-log mel
audio = OnnxVocoder("tok.onnx").infer(codes)   # token model: codes (B, n_q, F) or (n_q, F) integers

Mels and noise are checked exactly as the PyTorch path checks them (:mod:`flow2gan.validation`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flow2gan.validation import check_mel_array, check_noise_array

INIT_NOISE_SCALE = 0.1


class OnnxVocoder:
    """An exported N-step sampler (``python -m flow2gan.bin.export``) in an onnxruntime CPU session."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        noise_input = inputs["noise"]
        self.cond_name = "codes" if "codes" in inputs else "mel"
        self.n_mels = inputs["mel"].shape[1] if self.cond_name == "mel" else None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.hop_length = int(metadata.get("mel_hop_length", 0)) or None
        self.min_frames = int(metadata.get("min_mel_frames", 1))
        self.noise_name = noise_input.name

    def infer(self, mel: np.ndarray, noise: np.ndarray | None = None, seed: int | None = None) -> np.ndarray:
        """Log-mel (B, n_mels, F) or (n_mels, F) -> audio (B, F * hop) float32 in [-1, 1].

        ``noise`` is the scaled start 0.1 * N(0, 1) of shape (B, F * hop), else drawn with ``seed``.
        A token model's file takes integer codes (B, n_q, F) in place of the mel. Raises ``ValueError``
        for inputs that break the contract of :mod:`flow2gan.validation` (shape, band or frame count,
        dtype, NaN/inf; a mel below ln(1e-7) warns once), as ``model.infer`` does.
        """
        if self.cond_name == "codes":
            mel = self.check_codes(mel)
        else:
            mel = check_mel_array(mel, self.n_mels, self.min_frames)
        batch, frames = mel.shape[0], mel.shape[2]
        if noise is None:
            if self.hop_length is None:
                raise ValueError("this model file does not record mel_hop_length: pass noise explicitly")
            shape = (batch, frames * self.hop_length)
            noise = INIT_NOISE_SCALE * np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        else:
            noise = np.asarray(noise)
            length = noise.shape[-1] if noise.ndim else 0
            noise = check_noise_array(noise, batch, frames * self.hop_length if self.hop_length else length)
        return self.session.run(["audio"], {self.cond_name: mel, self.noise_name: noise})[0]

    @staticmethod
    def check_codes(codes: np.ndarray) -> np.ndarray:
        """Integer codes (B, n_q, F) or (n_q, F) -> int64 (B, n_q, F); ``ValueError`` otherwise."""
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3:
            raise ValueError(f"codes must have shape (B, n_q, frames), got {codes.shape}")
        return codes.astype(np.int64)
