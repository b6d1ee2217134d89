"""Evaluation from a plain install: a missing optional package costs only its own metrics."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from flow2gan.audio import read_audio
from flow2gan.eval import metrics
from flow2gan.eval.metrics import MetricsConfig, score_pair
from flow2gan.eval.pitch import PITCH_KEYS

LIBRITTS_WAVS = REPO.parent / "shared" / "test_data" / "wav"


def run_python(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    path = [str(extra_path)] if extra_path else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([*path, str(REPO)])}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )


@pytest.mark.skipif(not LIBRITTS_WAVS.is_dir(), reason="needs ../shared/test_data")
def test_evaluate_without_torchcrepe_scores_every_pair(tmp_path):
    """The issue's case: two identical LibriTTS files, torchcrepe not installed -> 2 of 2 pairs scored."""
    code = (
        "import sys; sys.modules['torchcrepe'] = None\n"
        "from flow2gan.bin.evaluate import main\n"
        f"sys.exit(main(['--gt-wav-dir', {str(LIBRITTS_WAVS)!r}, '--pred-wav-dir', {str(LIBRITTS_WAVS)!r}, "
        f"'--output-json', {str(tmp_path / 'm.json')!r}]))"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2/2" in proc.stdout and "pitch metrics skipped: " in proc.stdout
    assert proc.stderr.count("pitch metrics (periodicity, pitch_rmse") == 1
    assert "pip install 'flow2gan[eval]'" in proc.stderr
    records = json.loads((tmp_path / "m.json").read_text())
    assert len(records) == 2
    for rec in records:
        assert rec["pesq"] > 4.5 and rec["stoi"] == pytest.approx(1.0) and rec["mr_stft"] == 0.0
        assert not set(PITCH_KEYS) & set(rec)
    summary = json.loads((tmp_path / "m_summary.json").read_text())
    assert list(summary["skipped_metrics"]) == ["pitch"] and summary["num_scored"] == 2


@pytest.fixture
def no_pesq(monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)
    metrics.missing_dependency.cache_clear()
    metrics.metric_available.cache_clear()
    yield
    metrics.missing_dependency.cache_clear()
    metrics.metric_available.cache_clear()


def test_score_pair_without_pesq_fills_the_rest_and_warns_once(no_pesq, caplog):
    data, sr = read_audio(REPO / "test_data" / "wav" / "us_male_fox.wav")
    clip = data[:sr, 0]
    noisy = clip + 0.01 * np.random.default_rng(0).standard_normal(clip.shape).astype(np.float32)
    cfg = MetricsConfig(sampling_rate=sr, pitch=False)
    with caplog.at_level(logging.WARNING):
        first = score_pair(clip, noisy, cfg)
        second = score_pair(clip, clip, cfg)
    assert set(first) == set(second) == {"stoi", "mr_stft"}
    assert first["stoi"] < second["stoi"] == pytest.approx(1.0)
    assert caplog.text.count("pesq metrics (pesq) are skipped") == 1


def test_torchcrepe_loads_next_to_a_torchaudio_that_cannot_load(tmp_path):
    """A torchaudio installed beside torchcrepe (its declared dependency) may not load with this torch."""
    broken = tmp_path / "torchaudio"
    broken.mkdir()
    (broken / "_extension.py").write_text("X = 1\n")
    (broken / "__init__.py").write_text(
        "from torchaudio import _extension\nraise OSError('Could not load this library: _torchaudio.so')\n"
    )
    code = (
        "import sys\n"
        "from flow2gan.eval.crepe import import_torchcrepe\n"
        "crepe = import_torchcrepe()\n"
        "assert callable(crepe.predict)\n"
        "assert not [m for m in sys.modules if m.startswith('torchaudio')], sorted(sys.modules)\n"
        "try:\n    crepe.load.audio('x.wav')\nexcept ImportError as exc:\n    print(exc)\n"
    )
    proc = run_python(code, extra_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torchaudio is not installed (or cannot load with this torch)" in proc.stdout
