"""lhotse Shar training data: writing shards, per-rank/per-worker splitting, epochs, training and resume."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PARITY, REPO
from lhotse import CutSet, RecordingSet

from flow2gan.bin import prepare_manifests, pretrain
from flow2gan.training.data import (
    AudioDataset,
    SharLoader,
    SharTrainStream,
    make_shar_train_loader,
    make_train_loaders,
    set_loader_epoch,
)
from flow2gan.training.distributed import free_port

SR = 24000
WAVS = REPO / "test_data" / "wav"
TINY = str(PARITY / "tiny_24k_config.json")
NAMES = sorted(f"{p.stem}-rep{k}" for p in WAVS.glob("*.wav") for k in range(2))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """test_data/wav listed twice: a manifest, Shar shards of 1 recording, and of 3 (sizes 3, 3, 2)."""
    root = tmp_path_factory.mktemp("shar")
    base = ["--wav-dir", str(WAVS), "--repeat", "2"]
    assert prepare_manifests.main([*base, "--out", str(root / "all.jsonl.gz")]) == 0
    assert prepare_manifests.main([*base, "--shar-dir", str(root / "s1"), "--shar-shard-size", "1"]) == 0
    assert prepare_manifests.main([*base, "--shar-dir", str(root / "s3"), "--shar-shard-size", "3"]) == 0
    return {"manifest": root / "all.jsonl.gz", "s1": root / "s1", "s3": root / "s3"}


def items() -> AudioDataset:
    return AudioDataset([], SR, "train")


def names(stream, n: int) -> list[str]:
    return [item.name for item in itertools.islice(iter(stream), n)]


def test_prepare_writes_lossless_shuffled_shards(data):
    assert len(list(data["s3"].glob("recording.*.tar"))) == 3
    cuts = list(CutSet.from_shar(in_dir=data["s3"]))
    assert sorted(c.id for c in cuts) == NAMES and [c.id for c in cuts] != NAMES  # seeded shuffle
    originals = RecordingSet.from_file(data["manifest"]).to_eager()
    for cut in cuts[:2]:
        np.testing.assert_array_equal(cut.recording.load_audio(), originals[cut.id].load_audio())


def test_stream_splits_shards_by_rank(data, monkeypatch):
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        stream = SharTrainStream(data["s1"], items())
        seen.append(names(stream, 12))
        assert names(stream, 12) == seen[-1]  # the same epoch replays exactly
        stream.set_epoch(2)
        assert names(stream, 4) != seen[-1][:4]
    assert sorted(seen[0][:4] + seen[1][:4]) == NAMES  # first pass: disjoint halves of the shards
    assert sorted(seen[0][4:8] + seen[1][4:8]) == NAMES  # second pass: reshuffled, still disjoint


def test_loader_splits_shards_by_worker(data):
    loader = make_shar_train_loader(data["s1"], SR, batch_size=1, num_workers=2)
    assert len(loader) == 8
    set_loader_epoch([loader], 1)
    first = [batch[2][0] for batch in loader]
    assert sorted(first) == NAMES  # each worker read its own 4 shards
    set_loader_epoch([loader], 1)
    assert [batch[2][0] for batch in loader] == first
    set_loader_epoch([loader], 2)  # reaches the workers: they must not persist across epochs
    assert [batch[2][0] for batch in loader] != first


def test_shar_loader_errors(data, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a lhotse Shar directory"):
        make_shar_train_loader(tmp_path, SR, 2, 0)
    with pytest.raises(ValueError, match="3 shards for 1 rank"):
        make_shar_train_loader(data["s3"], SR, 2, num_workers=4)
    with pytest.raises(RuntimeError, match="set RANK and WORLD_SIZE"):
        make_shar_train_loader(data["s3"], SR, 2, 0, world_size=2, rank=1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    loader = make_shar_train_loader(data["s3"], SR, 3, 0, world_size=2, rank=1)
    assert len(loader) == 2  # ceil(8 cuts / (2 ranks x 3)), also for the rank holding 1 shard of 2 cuts


def test_mixed_with_manifest(data):
    mixer = make_train_loaders([str(data["manifest"])], [1.0, 1.0], SR, 2, 0, shar_dirs=[str(data["s3"])])
    assert isinstance(mixer.loaders[1], SharLoader) and len(mixer.loaders[1]) == 4
    set_loader_epoch(mixer.loaders, 1)
    batches = list(mixer)
    assert {index for index, _ in batches} == {0, 1}
    assert all(audio.shape == (2, int(1.5 * SR)) for _, (audio, _, _) in batches)


def train_args(shar: Path, exp: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "--train-shar",
        str(shar),
        "--valid-recordings",
        str(shar.parent / "all.jsonl.gz"),
        "--model-name",
        TINY,
        "--exp-dir",
        str(exp),
        "--num-epochs",
        str(epochs),
        "--batch-size",
        "3",
        "--average-period",
        "2",  # model_avg turns fp32 at a save but is reloaded in fp64: exact only for weights 1 and 1/2
        "--train-num-workers",
        "0",
        "--valid-num-workers",
        "0",
        "--tensorboard",
        "false",
        *extra,
    ]


@pytest.mark.slow
def test_pretrain_on_shar_resumes_exactly(data, tmp_path):
    assert pretrain.main(train_args(data["s3"], tmp_path / "full", 2)) == 0
    assert pretrain.main(train_args(data["s3"], tmp_path / "split", 1)) == 0
    assert pretrain.main(train_args(data["s3"], tmp_path / "split", 2, "--resume", "auto")) == 0
    full = torch.load(tmp_path / "full" / "epoch-2.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "epoch-2.pt", weights_only=True)
    assert full["batch_idx_train"] == split["batch_idx_train"] == 5  # ceil(8 / 3) = 3 batches per epoch
    assert full["train_shar"] == [str(data["s3"])]
    for key in ("model", "model_avg"):
        torch.testing.assert_close(split[key], full[key], rtol=0, atol=0, msg=key)


def test_training_needs_data(data, tmp_path, capsys):
    args = train_args(data["s3"], tmp_path, 1)
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(args[2:])
    assert exit_info.value.code == 2  # a usage error, as for a value of the wrong type
    assert "--train-recordings and/or --train-shar" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_ranks_with_unequal_shards_run_equal_epochs(data, tmp_path):
    """s3 has 3 shards (3, 3, 2 cuts): one rank reads 2 of them, the other 1; both must run 2 batches."""
    cmd = [sys.executable, "-m", "flow2gan.bin.pretrain", *train_args(data["s3"], tmp_path, 1)]
    cmd += ["--world-size", "2", "--master-port", str(free_port())]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(tmp_path / "epoch-1.pt", weights_only=True)["batch_idx_train"] == 1


@pytest.mark.slow
def test_pretrain_on_shar_resumes_mid_epoch_exactly(data, tmp_path):
    """Shar streams replay exactly: resuming from the batch-2 checkpoint of epoch 1 ends bit-identical."""
    extra = ["--train-num-workers", "2", "--save-every-n-batches", "2"]
    assert pretrain.main(train_args(data["s3"], tmp_path / "full", 2, *extra)) == 0
    mid = tmp_path / "mid"
    assert pretrain.main(train_args(data["s3"], mid, 2, *extra)) == 0
    kept = mid / "epoch-1-batch-2.pt"
    assert kept.is_file()
    for path in mid.glob("epoch-*.pt"):
        if path != kept:
            path.unlink()
    assert pretrain.main(train_args(data["s3"], mid, 2, *extra, "--resume", "auto")) == 0
    log = "".join(p.read_text() for p in (mid / "log").glob("log-train-*"))
    assert "resumed epoch at batch 2" in log
    full = torch.load(tmp_path / "full" / "epoch-2.pt", weights_only=True)
    resumed = torch.load(mid / "epoch-2.pt", weights_only=True)
    assert full["batch_idx_train"] == resumed["batch_idx_train"] == 5
    for key in ("model", "model_avg"):
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)
