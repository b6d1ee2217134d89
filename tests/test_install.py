"""The base install (no extras) is enough for inference; training without its extra fails with a hint."""

import os
import subprocess
import sys

import pytest
from conftest import REPO, TINY_MODEL_ARGS

# Importing any of these from the inference path would break `pip install flow2gan` (no extras).
EXTRAS_ONLY = (
    "lhotse",
    "tensorboard",
    "matplotlib",
    "pesq",
    "pystoi",
    "librosa",
    "scipy",
    "onnx",
    "transformers",
)

BLOCK = f"import sys\nfor name in {EXTRAS_ONLY!r}:\n    sys.modules[name] = None\n"


def run_without_extras(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )


@pytest.mark.slow
def test_inference_api_and_infer_dir_need_no_extras(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "fox.wav").write_bytes((REPO / "test_data" / "wav" / "us_male_fox.wav").read_bytes())
    model_args = TINY_MODEL_ARGS[:4]
    code = f"""
import torch
from flow2gan import get_model
from flow2gan.models.modules import LogMelSpectrogram
model, cfg = get_model(model_name={model_args[3]!r}, checkpoint={model_args[1]!r})
mel_fn = LogMelSpectrogram(cfg.sampling_rate, cfg.mel_n_fft, cfg.mel_hop_length, cfg.n_mels)
mel = mel_fn(torch.zeros(1, 2560))
print(tuple(model.infer(cond=mel, n_timesteps=2, clamp_pred=True).shape))
from flow2gan.bin.infer_dir import main
main({[*model_args, "--device", "cpu", "--input-dir", str(src), "--output-dir", str(out)]!r})
"""
    proc = run_without_extras(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == "(1, 2816)"
    assert (out / "fox.wav").is_file()


def test_training_without_its_extra_names_the_install_command():
    proc = run_without_extras("import flow2gan.training.loop")
    assert proc.returncode != 0
    assert "ImportError: flow2gan training needs packages that are not installed" in proc.stderr
    assert "pip install 'flow2gan[train]'" in proc.stderr
