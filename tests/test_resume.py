"""Mid-epoch checkpoints: a training process killed with SIGKILL and resumed ends bit-identical."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import PARITY, REPO

from flow2gan.bin import finetune, prepare_manifests, pretrain
from flow2gan.training.experiment import resume_candidates, set_aside

TINY = str(PARITY / "tiny_24k_config.json")
STAGES = {
    "pretrain": (pretrain, []),
    "finetune": (
        finetune,
        ["--gan-name", "gan_small_multi_scale_mel_recon", "--gen-start-batch-idx", "3", "--n-timesteps", "1"],
    ),
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("manifests") / "train.jsonl.gz"
    wavs = REPO / "test_data" / "wav"
    assert prepare_manifests.main(["--wav-dir", str(wavs), "--out", str(path), "--repeat", "2"]) == 0
    return path  # 8 recordings: 8 batches of 1 per epoch


def flags(manifest: Path, exp_dir: Path, extra: list[str]) -> list[str]:
    return [
        *("--train-recordings", str(manifest), "--valid-recordings", str(manifest), "--model-name", TINY),
        *("--exp-dir", str(exp_dir), "--num-epochs", "2", "--batch-size", "1", "--tensorboard", "false"),
        *("--train-num-workers", "1", "--valid-num-workers", "0", "--average-period", "2"),
        *("--valid-interval", "5", "--log-interval", "1", "--save-every-n-batches", "3", "--duration", "0.5"),
        *extra,
    ]


def test_set_aside_never_overwrites(tmp_path):
    path = tmp_path / "epoch-3.pt"
    for n, name in enumerate(["epoch-3.pt.skipped", "epoch-3.pt.skipped-2", "epoch-3.pt.skipped-3"]):
        path.write_bytes(bytes([n]))
        assert set_aside(path) == tmp_path / name
    assert not path.exists()
    kept = [(tmp_path / f"epoch-3.pt.skipped{s}").read_bytes() for s in ("", "-2", "-3")]
    assert kept == [b"\0", b"\1", b"\2"]
    assert resume_candidates(tmp_path) == []  # set-aside files are never resumed from


def kill_after_first_mid_epoch_checkpoint(stage: str, args: list[str], exp_dir: Path) -> None:
    """Run the CLI in a subprocess and SIGKILL it as soon as a mid-epoch checkpoint exists."""
    proc = subprocess.Popen([sys.executable, "-m", f"flow2gan.bin.{stage}", *args], cwd=REPO)
    deadline = time.monotonic() + 300
    while not list(exp_dir.glob("epoch-1-batch-*.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no mid-epoch checkpoint was written"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_run_resumes_bit_identical(manifest, tmp_path, stage):
    cli, extra = STAGES[stage]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert cli.main(flags(manifest, full, extra)) == 0
    kill_after_first_mid_epoch_checkpoint(stage, flags(manifest, killed, extra), killed)
    assert not (killed / "epoch-2.pt").exists()
    # files a crash can leave: a temporary file of the atomic writer and a truncated checkpoint
    (killed / ".epoch-2-batch-6.pt.x1.tmp").write_bytes(b"partial")
    (killed / "epoch-2-batch-9.pt").write_bytes(b"truncated")
    # and a readable file that holds no training state (an exported generator)
    (killed / "epoch-2-batch-8.pt").write_bytes((PARITY / "tiny_24k.pt").read_bytes())
    (killed / "epoch-2-batch-7.pt").mkdir()  # and a folder named like a checkpoint
    planted = {"epoch-2-batch-9.pt", "epoch-2-batch-8.pt", "epoch-2-batch-7.pt"}
    newest_good = next(p for p in resume_candidates(killed) if p.path.name not in planted)
    assert cli.main([*flags(manifest, killed, extra), "--resume", "auto"]) == 0
    log = "".join(p.read_text() for p in (killed / "log").glob("log-train-*"))
    assert "skipping unreadable checkpoint" in log
    # the skipped files are kept beside the run's own (which took their names), not written over
    assert (killed / "epoch-2-batch-9.pt.skipped").read_bytes() == b"truncated"
    assert (killed / "epoch-2-batch-8.pt.skipped").read_bytes() == (PARITY / "tiny_24k.pt").read_bytes()
    assert (killed / "epoch-2-batch-7.pt.skipped").is_dir()
    assert "epoch-2-batch-8.pt has no batch_idx_train (an int)" in log
    assert newest_good.batches_done > 0  # the kill came mid-epoch
    assert f"resumed epoch at batch {newest_good.batches_done}" in log
    a = torch.load(full / "epoch-2.pt", weights_only=True)
    b = torch.load(killed / "epoch-2.pt", weights_only=True)
    assert a["batch_idx_train"] == b["batch_idx_train"] == 15
    for key in [k for k in a if k.startswith(("model", "optimizer", "scheduler", "grad_scaler"))]:
        assert_identical(a[key], b[key], key)


def assert_identical(a, b, where: str) -> None:
    """Equal nested dicts/lists of tensors and values, bit for bit (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)), where
    else:
        assert a == b, where
