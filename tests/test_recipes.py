"""Recipes: run_libritts.sh data preparation on a fake LibriTTS tree, and the CPU mini recipe end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import REPO
from lhotse import RecordingSet

PARTS = ("train-clean-100", "train-other-500", "dev-clean", "dev-other", "test-clean", "test-other")


def make_fake_libritts(root: Path) -> None:
    """A few real wavs in the LibriTTS layout <part>/<speaker>/<chapter>/<spk>_<chap>_<utt>.wav."""
    wav = sorted((REPO / "test_data" / "wav").glob("*.wav"))[0]
    for part in PARTS:
        for spk, chapter in (("19", "198"), ("26", "495")):
            folder = root / part / spk / chapter
            folder.mkdir(parents=True)
            for utt in range(3 if part.startswith("test") else 2):
                name = f"{spk}_{chapter}_{part.replace('-', '')}_{utt:06d}.wav"
                (folder / name).write_bytes(wav.read_bytes())


def run_script(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / script), *args, "--python", sys.executable],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=600,
    )


def test_run_libritts_data_preparation(tmp_path):
    root = tmp_path / "LibriTTS"
    make_fake_libritts(root)
    manifests, lists = tmp_path / "manifests", tmp_path / "lists"
    flags = ["--libritts-root", str(root), "--manifest-dir", str(manifests), "--wav-list-dir", str(lists)]
    result = run_script("run_libritts.sh", "--stage", "-1", "--stop-stage", "-1", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    for part in PARTS:
        recordings = RecordingSet.from_file(manifests / f"recordings_{part}.jsonl.gz")
        assert len(recordings) == (6 if part.startswith("test") else 4)
        assert all(str(rec.sources[0].source).startswith(str(root / part)) for rec in recordings)
    assert len(RecordingSet.from_file(manifests / "recordings_train-all-shuf.jsonl.gz")) == 8
    assert len(RecordingSet.from_file(manifests / "recordings_valid.jsonl.gz")) == 8
    assert len(RecordingSet.from_file(manifests / "recordings_test.jsonl.gz")) == 12
    assert len(RecordingSet.from_file(manifests / "recordings_test_10.jsonl.gz")) == 10
    valid_list = (lists / "filelist_valid.txt").read_text().split()
    assert len(valid_list) == 8 and all((root / line).is_file() for line in valid_list)
    assert len((lists / "filelist_test.txt").read_text().split()) == 12
    assert (lists / "dev-other.txt").is_file() and not (lists / "train-clean-100.txt").exists()


def test_run_libritts_missing_root_is_a_clear_message(tmp_path):
    result = run_script(
        "run_libritts.sh", "--stage", "-1", "--stop-stage", "-1", "--libritts-root", str(tmp_path / "x")
    )
    assert result.returncode == 1
    assert "LibriTTS not found" in result.stderr and "Traceback" not in result.stderr
