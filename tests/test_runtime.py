"""The malloc tuning is applied (on glibc) and changes no number; device names are checked."""

import subprocess
import sys

import pytest
import torch
from conftest import PARITY, REPO

from flow2gan.runtime import default_device, resolve_device

CODE = f"""
import sys, torch
from flow2gan.runtime import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tuned" else False
from flow2gan import get_model
ref = torch.load({str(PARITY / "tiny_24k_ref.pt")!r}, weights_only=True)
config, checkpoint = {str(PARITY / "tiny_24k_config.json")!r}, {str(PARITY / "tiny_24k.pt")!r}
model, _ = get_model(model_name=config, checkpoint=checkpoint)
with torch.inference_mode():
    out = model.infer(ref["mel"], n_timesteps=4, noise=ref["noise"])
print(applied, (out - ref["out_4"]).abs().max().item())
"""


@pytest.mark.slow
def test_tune_malloc_keeps_outputs():
    results = {}
    for mode in ("default", "tuned"):
        proc = subprocess.run([sys.executable, "-c", CODE, mode], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        applied, diff = proc.stdout.split()
        results[mode] = (applied, float(diff))
    assert results["tuned"][0] == ("True" if sys.platform.startswith("linux") else "False")
    assert results["tuned"][1] == results["default"][1] <= 1e-5


def test_resolve_device_rejects_unusable_devices(monkeypatch):
    assert resolve_device(None) == default_device()
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
