"""Paired evaluation of a folder of predictions: pair listing, per-file scoring, means and a table.

The library side of ``flow2gan-evaluate`` (:mod:`flow2gan.bin.evaluate`): each relative path ``rel``
pairs ``GT/rel`` with ``PRED/rel``; :func:`run_jobs` scores them (in-process or in spawned workers),
:func:`mean_scores` averages the metrics and :func:`format_table` prints them.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flow2gan.audio import read_audio
from flow2gan.eval.metrics import MetricsConfig, score_pair
from flow2gan.eval.pitch import PITCH_KEYS

# Seed of numpy's global RNG before each file's pitch extraction: torchcrepe dithers its pitch
# estimates (+-20 cents, triangular) with that RNG, so a fixed seed makes the pitch RMSE reproducible.
PITCH_DITHER_SEED = 0
METRIC_ORDER = ("pesq", "stoi", "mr_stft", "visqol", *PITCH_KEYS, "fsd")


def list_pairs(pred_dir: Path, wav_list_file: str | None) -> list[str]:
    """Relative paths to score: the list file's non-empty lines, else every ``*.wav`` under ``pred_dir``."""
    if wav_list_file is not None:
        lines = Path(wav_list_file).read_text().splitlines()
        return [line.strip() for line in lines if line.strip()]
    return sorted(path.relative_to(pred_dir).as_posix() for path in pred_dir.rglob("*.wav"))


def load_channel0(path: Path, sampling_rate: int) -> np.ndarray:
    """First channel of a WAV -> (T,) float32; ``ValueError`` if missing or not at ``sampling_rate``."""
    if not path.is_file():
        raise ValueError(f"missing file {path}")
    data, sr = read_audio(path)
    if sr != sampling_rate:
        raise ValueError(f"{path} is {sr} Hz, expected {sampling_rate} Hz")
    return data[:, 0]


def score_file(job: tuple[str, Path, Path, MetricsConfig]) -> dict[str, Any]:
    """Score a ``(rel, gt_dir, pred_dir, cfg)`` job -> ``{"name": rel, <metric>: value}`` or name + error."""
    rel, gt_dir, pred_dir, cfg = job
    try:
        pred = load_channel0(pred_dir / rel, cfg.sampling_rate)
        ref = load_channel0(gt_dir / rel, cfg.sampling_rate)
        np.random.seed(PITCH_DITHER_SEED)
        return {"name": rel, **score_pair(ref, pred, cfg)}
    except Exception as exc:  # one bad pair must not stop the run: it is reported and counted instead
        return {"name": rel, "error": str(exc)}


def _init_worker() -> None:
    """Worker initialiser: one torch thread per process."""
    torch.set_num_threads(1)


def run_jobs(jobs: Sequence[tuple[str, Path, Path, MetricsConfig]], n_proc: int) -> list[dict[str, Any]]:
    """Score all jobs in order, in-process or with ``n_proc`` spawned workers, with a progress bar."""
    if n_proc <= 1 or len(jobs) <= 1:
        return [score_file(job) for job in tqdm(jobs, desc="evaluate")]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_proc, mp_context=context, initializer=_init_worker) as pool:
        return list(tqdm(pool.map(score_file, jobs), total=len(jobs), desc="evaluate"))


def mean_scores(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Per-metric means; pitch metrics skip utterances whose pitch RMSE or V/UV F1 is NaN."""
    records = [rec for rec in records if "error" not in rec]
    pitch_rows = [
        rec for rec in records if not any(math.isnan(rec.get(k, 0.0)) for k in ("pitch_rmse", "vuv_f1"))
    ]
    means: dict[str, float] = {}
    for key in METRIC_ORDER:
        rows = pitch_rows if key in PITCH_KEYS else records
        values = [rec[key] for rec in rows if key in rec]
        if values:
            means[key] = float(np.mean(values))
    return means


def json_safe(value: Any) -> Any:
    """NaN floats -> None so the JSON output stays standard."""
    return None if isinstance(value, float) and math.isnan(value) else value


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def format_table(means: dict[str, Any], n_scored: int, n_total: int) -> str:
    """Two-column text table of the metric means plus the scored / total pair count."""
    lines = [f"{'metric':<15}{'mean':>12}", "-" * 27]
    for key, value in means.items():
        shown = f"{value:>12.4f}" if isinstance(value, float) else f"{value!s:>12}"
        lines.append(f"{key:<15}{shown}")
    lines.append(f"{'pairs scored':<15}{f'{n_scored}/{n_total}':>12}")
    return "\n".join(lines)
