"""Deployment export of the whole N-step sampler as one graph (ONNX or TorchScript).

``torch.istft`` does not export to a graph onnxruntime accepts, so the export path uses
:class:`MatmulISTFT` (inverse real DFT as a matmul, overlap-add with ``conv_transpose1d``, division by
the overlap-added squared window) and :class:`ConvSTFT` (reflect padding + strided ``conv1d`` with
windowed DFT bases). Both equal ``torch.istft`` / ``torch.stft`` (centred, one-sided) to float
precision; the eager model keeps the torch ops. Exported inputs: ``mel`` (B, n_mels, F) (a token model:
``codes`` (B, n_q, F) int64) and the scaled start ``noise`` (B, F * mel_hop) (``0.1 * randn``); output
``audio`` (B, F * mel_hop), clamped to [-1, 1].
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import TokenAudioGenerator
from flow2gan.sampling import euler_sample, resolve_n_timesteps


def dft_bases(n_fft: int) -> tuple[Tensor, Tensor]:
    """Real/imag DFT bases for the one-sided spectrum: cos and -sin, each (n_fft // 2 + 1, n_fft)."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(n_fft, dtype=torch.float64).unsqueeze(0)
    angle = 2 * math.pi * k * n / n_fft
    return torch.cos(angle), -torch.sin(angle)


class ConvSTFT(nn.Module):
    """Centred, reflect-padded one-sided STFT as a strided conv: (B, T) -> real, imag (B, N/2+1, 1+T//hop)."""

    def __init__(self, n_fft: int, hop_length: int, window: Tensor) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        cos, sin = dft_bases(n_fft)
        win = window.to(torch.float64)
        kernel = torch.cat([cos * win, sin * win]).unsqueeze(1).float()  # (2 * (N/2+1), 1, N)
        self.register_buffer("kernel", kernel)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) -> (real, imag), each (B, n_fft // 2 + 1, 1 + T // hop)."""
        pad = self.n_fft // 2
        padded = nn.functional.pad(x.unsqueeze(1), (pad, pad), mode="reflect")
        spec = nn.functional.conv1d(padded, self.kernel, stride=self.hop_length)
        return spec.chunk(2, dim=1)


class MatmulISTFT(nn.Module):
    """``torch.istft(center=True)`` without complex ops: real, imag (B, N/2+1, F) -> (B, hop * (F - 1))."""

    def __init__(self, n_fft: int, hop_length: int, window: Tensor) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        cos, sin = dft_bases(n_fft)
        scale = torch.full((n_fft // 2 + 1, 1), 2.0 / n_fft, dtype=torch.float64)
        scale[0] = scale[-1] = 1.0 / n_fft  # DC and Nyquist appear once; their imaginary parts drop out
        win = window.to(torch.float64)
        self.register_buffer("inv_real", (cos * scale * win).float())  # (N/2+1, N)
        self.register_buffer("inv_imag", (sin * scale * win).float())
        self.register_buffer("eye", torch.eye(n_fft).unsqueeze(1))  # (N, 1, N): overlap-add kernel
        self.register_buffer("win_sq", (win**2).float().view(1, n_fft, 1))

    def forward(self, real: Tensor, imag: Tensor) -> Tensor:
        """(B, N/2+1, F) x 2 -> (B, hop * (F - 1))."""
        frames = torch.matmul(real.transpose(1, 2), self.inv_real) + torch.matmul(
            imag.transpose(1, 2), self.inv_imag
        )
        signal = nn.functional.conv_transpose1d(frames.transpose(1, 2), self.eye, stride=self.hop_length)
        ones = torch.ones_like(real[:1, :1, :]).expand(1, self.n_fft, -1)
        envelope = nn.functional.conv_transpose1d(ones * self.win_sq, self.eye, stride=self.hop_length)
        pad = self.n_fft // 2
        length = self.hop_length * (real.shape[-1] - 1)
        return (signal / envelope)[:, 0, pad : pad + length]


class ExportTransform(nn.Module):
    """Export-friendly ``analyze``/``synthesize`` pair for one branch (see ``BranchEstimator``)."""

    def __init__(self, n_fft: int, hop_length: int, fft_window: Tensor, ifft_window: Tensor) -> None:
        super().__init__()
        self.stft = ConvSTFT(n_fft, hop_length, fft_window)
        self.istft = MatmulISTFT(n_fft, hop_length, ifft_window)

    def analyze(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) -> real, imag (B, n_fft // 2 + 1, 1 + T // hop)."""
        return self.stft(x)

    def synthesize(self, real: Tensor, imag: Tensor) -> Tensor:
        """real, imag (B, n_fft // 2 + 1, F) -> (B, hop * (F - 1))."""
        return self.istft(real, imag)


class ExportableSampler(nn.Module):
    """The N-step Euler sampler with export-friendly STFTs: cond (B, C, F), noise (B, F*hop) -> (B, F*hop).

    ``cond`` is a log-mel, or int64 codes (B, n_q, F) for a token model.
    """

    def __init__(self, model: MelAudioGenerator, n_timesteps: int) -> None:
        super().__init__()
        self.model = model.eval()
        self.n_timesteps = resolve_n_timesteps(n_timesteps)
        self.transforms = nn.ModuleList(
            ExportTransform(e.n_fft, e.hop_length, e.fft.window, e.ifft.window) for e in model.estimators
        )

    def forward(self, cond: Tensor, noise: Tensor) -> Tensor:
        """(B, C, F), (B, F * hop) -> (B, F * hop) audio in [-1, 1]."""
        cond_enc = self.model.encode_cond(cond, check=False)  # data-dependent checks do not trace
        prepared = self.model.prepare_condition(cond_enc, noise.shape[-1])
        return euler_sample(
            self.model, noise, prepared, self.n_timesteps, clamp_pred=True, transforms=self.transforms
        )


QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export")


def export_sampler(
    model: MelAudioGenerator,
    n_timesteps: int,
    output: Path,
    fmt: str = "onnx",
    frames: int = 32,
    verbose: bool = False,
) -> Path:
    """Write the N-step sampler to ``output`` as ONNX (dynamic batch and frame axes) or TorchScript.

    A token model's graph takes ``codes`` (B, n_q, F) int64 with a dynamic ``n_q`` (any of its
    bandwidths' codebook counts) instead of ``mel``.

    The exporter's progress and optimisation messages are shown only with ``verbose``. ``ValueError``
    for an unknown ``fmt`` or a step count below 1.
    """
    sampler = ExportableSampler(model, n_timesteps).eval()
    cfg = model.config
    tokens = isinstance(model, TokenAudioGenerator)
    if tokens:
        counts = [cfg.n_codebooks(b) for b in cfg.bandwidths]
        cond = torch.randint(0, cfg.codebook_size, (2, max(counts), frames))
    else:
        cond = torch.randn(2, cfg.n_mels, frames)
    noise = cfg.init_noise_scale * torch.randn(2, frames * cfg.mel_hop_length)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        with torch.no_grad():
            torch.jit.trace(sampler, (cond, noise), check_trace=False).save(str(output))
        return output
    if fmt != "onnx":
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    batch, n_frames = torch.export.Dim("batch"), torch.export.Dim("frames", min=cfg.min_mel_frames)
    cond_name = "codes" if tokens else "mel"
    cond_shape = {0: batch, 2: n_frames}
    if tokens:
        cond_shape[1] = torch.export.Dim("codebooks", min=min(counts), max=max(counts))
    shapes = {"cond": cond_shape, "noise": {0: batch, 1: n_frames * cfg.mel_hop_length}}
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        if not verbose:
            for name in QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
        with torch.no_grad(), warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
            program = torch.onnx.export(
                sampler,
                (cond, noise),
                input_names=[cond_name, "noise"],
                output_names=["audio"],
                dynamic_shapes=shapes,
                dynamo=True,
                opset_version=18,
                verbose=verbose,
            )
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    program.save(str(output))
    add_metadata(
        output,
        {
            "mel_hop_length": cfg.mel_hop_length,
            "min_mel_frames": cfg.min_mel_frames,
            "n_timesteps": n_timesteps,
            "sampling_rate": cfg.sampling_rate,
        },
    )
    return output


def add_metadata(path: Path, values: dict[str, object]) -> None:
    """Store key/value strings in an ONNX file's metadata (read back by ``OnnxVocoder``)."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, str(path))
