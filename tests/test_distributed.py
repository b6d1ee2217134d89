"""Stage-1 DDP training on CPU (gloo): ``--world-size 2`` (mp.spawn) and torchrun, one node x 2 processes
and 2 "nodes" x 1 process.

Every launch trains the tiny model for 2 epochs on the 4 test_data files (batch 1, so 2 batches per rank
per epoch) and must end with parameters bit-identical to ``--world-size 2`` (mp.spawn): ranks get the
same DistributedSampler shards, seeds and gloo sums whichever launcher started them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PARITY, REPO

from flow2gan.bin import prepare_manifests
from flow2gan.training.distributed import free_port

pytestmark = pytest.mark.slow  # each launch starts 2-3 Python processes (~15 s on 2 loaded cores)

TINY = str(PARITY / "tiny_24k_config.json")
TIMEOUT = 300


def env() -> dict[str, str]:
    """Child environment: this checkout first on the path, one thread per process."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def train_args(manifest: Path, exp_dir: Path) -> list[str]:
    return [
        "-m",
        "flow2gan.bin.pretrain",
        "--train-recordings",
        str(manifest),
        "--valid-recordings",
        str(manifest),
        "--model-name",
        TINY,
        "--exp-dir",
        str(exp_dir),
        "--num-epochs",
        "2",
        "--batch-size",
        "1",
        "--average-period",
        "1",
        "--train-num-workers",
        "0",
        "--valid-num-workers",
        "0",
        "--tensorboard",
        "false",
    ]


def check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("torchrun") / "all.jsonl.gz"
    assert prepare_manifests.main(["--wav-dir", str(REPO / "test_data" / "wav"), "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def spawned(manifest, tmp_path_factory) -> dict:
    """The reference: ``--world-size 2`` (mp.spawn)."""
    exp = tmp_path_factory.mktemp("spawn")
    cmd = [sys.executable, *train_args(manifest, exp), "--world-size", "2", "--master-port", str(free_port())]
    check(subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env(), timeout=TIMEOUT))
    return torch.load(exp / "epoch-2.pt", weights_only=True)


def test_spawned_world_size_two_checkpoints(spawned):
    assert {"model", "model_avg", "optimizer", "scheduler", "grad_scaler"} <= set(spawned)
    assert spawned["world_size"] == 2 and spawned["cur_epoch"] == 2
    assert spawned["batch_idx_train"] == 3  # 4 files / 2 ranks / batch 1, 2 epochs
    assert not any(k.startswith("module.") for k in spawned["model"])


def assert_same_training(ckpt: dict, reference: dict) -> None:
    assert ckpt["batch_idx_train"] == reference["batch_idx_train"] == 3  # 4 files / 2 ranks x 2 epochs
    assert ckpt["world_size"] == 2
    for key in ("model", "model_avg"):
        torch.testing.assert_close(ckpt[key], reference[key], rtol=0, atol=0, msg=key)
    torch.testing.assert_close(
        ckpt["optimizer"]["state"], reference["optimizer"]["state"], rtol=0, atol=0, equal_nan=True
    )


def test_torchrun_one_node_two_processes(manifest, spawned, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    result = subprocess.run(
        [*launcher, *train_args(manifest, tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=TIMEOUT,
    )
    check(result)
    assert_same_training(torch.load(tmp_path / "epoch-2.pt", weights_only=True), spawned)
    assert sorted(p.name[-2:] for p in (tmp_path / "log").glob("log-train-*")) == ["-0", "-1"]


def test_torchrun_two_nodes_c10d_rendezvous(manifest, spawned, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    for node_rank in (0, 1):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
        launcher += ["--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint]
        launcher += ["--rdzv-id", "flow2gan-test"]
        nodes.append(
            subprocess.Popen(
                [*launcher, *train_args(manifest, tmp_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=env(),
            )
        )
    try:
        for node in nodes:
            stdout, stderr = node.communicate(timeout=TIMEOUT)
            check(subprocess.CompletedProcess(node.args, node.returncode, stdout, stderr))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert_same_training(torch.load(tmp_path / "epoch-2.pt", weights_only=True), spawned)
