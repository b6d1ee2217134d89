"""benchmarks/learning.py: input checks before any work, and the NaN-aware means of its tables."""

import math
import sys
import warnings
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import learning  # noqa: E402


def contract_args(train: Path, held: Path, out: Path) -> list[str]:
    return ["--train-dir", str(train), "--heldout-dir", str(held), "--minutes", "1", "--out", str(out)]


def test_missing_folders_are_usage_errors_before_any_work(tmp_path: Path, capsys) -> None:
    held = tmp_path / "held"
    held.mkdir()
    for train, heldout in ((tmp_path / "missing", held), (held, tmp_path / "gone")):
        with pytest.raises(SystemExit) as exit_info:
            learning.main(contract_args(train, heldout, tmp_path / "out"))
        assert exit_info.value.code == 2
        assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_defaults_are_the_measured_cpu_settings(tmp_path: Path) -> None:
    args = learning.parse_args(contract_args(tmp_path, tmp_path, tmp_path / "out"))
    assert (args.lr_batches_gen, args.base_lr_gen, args.stage1_share) == (1500, 0.02, 0.3)


def test_mean_metrics_ignores_nan_and_keeps_all_nan_silently() -> None:
    rows = [dict.fromkeys(learning.METRICS, math.nan) for _ in range(2)]
    rows[0]["pesq"], rows[1]["pesq"] = 2.0, 3.0
    rows[1]["stoi"] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        means = learning.mean_metrics(rows)
    assert means["pesq"] == 2.5 and means["stoi"] == 0.5
    assert math.isnan(means["vuv_f1"])
    assert all(math.isnan(v) for v in learning.mean_metrics([]).values())
