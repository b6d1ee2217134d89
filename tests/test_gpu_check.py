"""benchmarks/gpu_check.py runs end to end on the CPU at tiny sizes (the GPU run is the same script)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402
import training_speed  # noqa: E402


@pytest.mark.slow
def test_quick_cpu_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path)], env=env, capture_output=True, text=True)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert proc.returncode == 0, report["errors"] or proc.stderr[-2000:]
    assert report["errors"] == {}
    rows = report["inference"]["rows"]
    assert [(r["model"], r["precision"]) for r in rows] == [
        ("flow2gan-1", "fp32"),
        ("flow2gan-1", "bf16"),
        ("vocos", "fp32"),
    ]
    assert all(r["xrt"] > 0 and r["out_samples"] > 0 for r in rows)
    diffs = report["bf16_accuracy"]["max_abs_diff"]
    assert set(diffs) == {"1", "2", "4"}
    assert all(0 < d < 0.05 for d in diffs.values())  # bf16 differs, but only by rounding
    steps = report["training"]["rows"]
    assert [(r["stage"], r["dtype"]) for r in steps] == [
        ("pretrain", "fp32"),
        ("pretrain", "fp16"),
        ("finetune", "fp32"),
    ]
    assert all(r["steps_per_s"] > 0 and r["peak_memory_mb"] > 0 and r["batch"] == 2 for r in steps)
    learning = report["learning"]
    assert "skipped" in learning or "summary" in learning
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| flow2gan-1 | bf16 |" in table and "| pretrain | fp16 | 2 (2) |" in table


def test_a_failing_section_is_recorded_and_the_next_runs(tmp_path):
    report = gpu_check.Report(tmp_path, {"torch": "2.x", "cpu": "test cpu"}, {"mode": "quick on cpu"})
    with report.section("inference"):
        raise RuntimeError("boom")
    with report.section("bf16_accuracy") as results:
        results["max_abs_diff"] = {1: 0.001}
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["errors"]["inference"].startswith("RuntimeError: boom")
    assert data["bf16_accuracy"]["max_abs_diff"] == {"1": 0.001}
    table = (tmp_path / "gpu_check.md").read_text()
    assert "**inference failed**: RuntimeError: boom" in table and "| 1 | 1.00e-03 |" in table


def test_training_batch_falls_back_on_out_of_memory(monkeypatch):
    tried = []

    def fake_measure(stage, batch, dtype, device, **kwargs):
        tried.append(batch)
        if batch > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return {"stage": stage, "batch": batch, "batch_asked": batch}

    monkeypatch.setattr(training_speed, "measure", fake_measure)
    row = training_speed.measure_with_fallback("pretrain", 256, "fp32", "cpu")
    assert tried == [256, 128, 64]
    assert row["batch"] == 64 and row["batch_asked"] == 256

    def always_out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(training_speed, "measure", always_out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        training_speed.measure_with_fallback("pretrain", 4, "fp32", "cpu")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--duration", "inf"], "--duration must be a finite number > 0, got inf"),
        (["--gan-name", "nosuchgan"], "argument --gan-name: invalid choice: 'nosuchgan'"),
        (["--model-name", "nosuchmodel"], "--model-name: unknown model name 'nosuchmodel'"),
        (
            ["--model-name", "encodec_24k_small"],
            "--model-name encodec_24k_small: this benchmark measures mel",
        ),
        (["--device", "foo"], "--device: "),
        (
            ["--stage", "finetune", "--duration", "0.04"],
            "too short for the mel reconstruction loss's 2048-sample",
        ),
    ],
)
def test_training_speed_rejects_bad_flags_before_measuring(monkeypatch, capsys, flags, message):
    """A bad flag of any stage is a usage error before the first (possibly long) measurement."""

    def never(*args, **kwargs):
        raise AssertionError("measured despite a bad flag")

    monkeypatch.setattr(training_speed, "measure_with_fallback", never)
    with pytest.raises(SystemExit) as exit_info:
        training_speed.main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
