"""Export-friendly STFTs, ONNX / TorchScript export of the N-step sampler, and the onnxruntime wrapper."""

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PARITY, REPO

from flow2gan import get_model
from flow2gan.bin import export as export_cli
from flow2gan.deploy import ConvSTFT, ExportableSampler, MatmulISTFT, export_sampler
from flow2gan.features import complex_stft
from flow2gan.onnx import OnnxVocoder

CONFIG = str(PARITY / "tiny_24k_config.json")
CKPT = PARITY / "tiny_24k.pt"


@pytest.fixture(scope="module")
def model():
    return get_model(model_name=CONFIG, checkpoint=CKPT)[0]


@pytest.mark.parametrize("n_fft", [512, 256, 128])
def test_export_friendly_stft_and_istft_match_torch(n_fft):
    hop, window = n_fft // 2, torch.hann_window(n_fft)
    x = 0.1 * torch.randn(2, 5003)
    spec = complex_stft(x, n_fft, hop, window)
    real, imag = ConvSTFT(n_fft, hop, window)(x)
    assert (real - spec.real).abs().max() <= 1e-5 and (imag - spec.imag).abs().max() <= 1e-5
    spec = spec + 1j * torch.randn_like(spec.real) * (
        torch.arange(spec.shape[1]) % (n_fft // 2) == 0
    ).unsqueeze(-1)
    ref = torch.istft(spec, n_fft, hop, window=window, center=True)
    out = MatmulISTFT(n_fft, hop, window)(spec.real, spec.imag)
    assert out.shape == ref.shape and (out - ref).abs().max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2, 4])
def test_onnx_export_matches_eager_with_dynamic_axes(model, tmp_path, n):
    path = export_sampler(model, n, tmp_path / f"s{n}.onnx")
    vocoder = OnnxVocoder(path, threads=1)
    for batch, frames in ((1, 41), (3, 29)):
        mel, noise = torch.randn(batch, 100, frames), 0.1 * torch.randn(batch, frames * 256)
        with torch.inference_mode():
            ref = model.infer(mel, n_timesteps=n, noise=noise, clamp_pred=True)
            assert (ExportableSampler(model, n)(mel, noise) - ref).abs().max() <= 1e-5
        out = vocoder.infer(mel.numpy(), noise.numpy())
        assert out.shape == (batch, frames * 256) and np.abs(out - ref.numpy()).max() <= 1e-4
    drawn = vocoder.infer(mel[0].numpy(), seed=3)
    assert drawn.shape == (1, 29 * 256) and np.array_equal(drawn, vocoder.infer(mel[:1].numpy(), seed=3))
    with pytest.raises(ValueError, match="expects n_mels=100"):
        vocoder.infer(np.zeros((1, 80, 10), dtype=np.float32))


@pytest.mark.slow
def test_torchscript_export_and_cli(model, tmp_path):
    out = tmp_path / "s2.pt"
    assert (
        export_cli.main(
            [
                "--checkpoint",
                str(CKPT),
                "--model-name",
                CONFIG,
                "--n-timesteps",
                "2",
                "--format",
                "torchscript",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    scripted = torch.jit.load(str(out))
    mel, noise = torch.randn(2, 100, 33), 0.1 * torch.randn(2, 33 * 256)
    with torch.inference_mode():
        ref = model.infer(mel, n_timesteps=2, noise=noise, clamp_pred=True)
        assert (scripted(mel, noise) - ref).abs().max() <= 1e-5


@pytest.mark.slow
def test_onnx_runtime_needs_no_torch(model, tmp_path, capfd, caplog):
    with caplog.at_level(logging.INFO):
        path = export_sampler(model, 1, tmp_path / "s1.onnx")
    out, err = capfd.readouterr()
    assert "Replaced initializer" not in out + err + caplog.text and "[torch.onnx]" not in out + err
    assert not [r for r in caplog.records if r.name.startswith(("onnx", "torch"))]  # quiet unless verbose
    code = (
        "import sys, numpy as np; sys.modules['torch'] = None; from flow2gan.onnx import OnnxVocoder; "
        f"print(OnnxVocoder({str(path)!r}).infer(np.zeros((1, 100, 5), np.float32), seed=0).shape)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(1, 1280)"
