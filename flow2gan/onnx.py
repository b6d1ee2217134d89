"""Run an exported flow2gan ONNX sampler with onnxruntime and NumPy only (no torch needed).

from flow2gan.onnx import OnnxVocoder
audio = OnnxVocoder("model.onnx").infer(mel)   # mel: (B, n_mels, F) or (n_mels, F) float32
audio = OnnxVocoder("tok.onnx").infer(codes)   # token model: codes (B, n_q, F) or (n_q, F) integers
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
        self.hop_length = (
            int(self.session.get_modelmeta().custom_metadata_map.get("mel_hop_length", 0)) or None
        )
        self.noise_name = noise_input.name

    def infer(self, mel: np.ndarray, noise: np.ndarray | None = None, seed: int | None = None) -> np.ndarray:
        """Log-mel (B, n_mels, F) -> audio (B, F * hop); ``noise`` is the scaled start 0.1 * N(0, 1).

        A token model's file takes integer codes (B, n_q, F) in place of the mel. ``ValueError`` for
        a condition of the wrong shape or type.
        """
        if self.cond_name == "codes":
            mel = np.asarray(mel)
            if mel.dtype.kind not in "iu":
                raise ValueError(f"codes must be integers, got {mel.dtype}")
            mel = mel.astype(np.int64)
        else:
            mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim == 2:
            mel = mel[None]
        if mel.ndim != 3 or (self.n_mels is not None and mel.shape[1] != self.n_mels):
            what = (
                "codes must have shape (B, n_q"
                if self.n_mels is None
                else f"mel must have shape (B, {self.n_mels}"
            )
            raise ValueError(f"{what}, frames), got {mel.shape}")
        if noise is None:
            if self.hop_length is None:
                raise ValueError("this model file does not record mel_hop_length: pass noise explicitly")
            shape = (mel.shape[0], mel.shape[2] * self.hop_length)
            noise = INIT_NOISE_SCALE * np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        return self.session.run(
            ["audio"], {self.cond_name: mel, self.noise_name: np.asarray(noise, dtype=np.float32)}
        )[0]
