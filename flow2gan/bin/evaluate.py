"""Score predicted WAVs against ground truth: PESQ, STOI, MR-STFT, ViSQOL, pitch/periodicity/V-UV, FSD.

Usage: ``python -m flow2gan.bin.evaluate --gt-wav-dir GT --pred-wav-dir PRED [--wav-list-file LIST]``.
Each relative path ``rel`` (a line of the list, or every ``*.wav`` under the prediction directory)
pairs ``GT/rel`` with ``PRED/rel``. Per-file records go to ``--output-json`` (default
``PRED/metrics.json``), means and failures to ``<output stem>_summary.json``; a summary table is
printed. Exit code 0 only when every pair was scored. A metric whose optional package is missing
is skipped for every pair with one warning (and listed under ``skipped_metrics`` in the summary);
the other metrics are still computed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flow2gan.audio import read_audio
from flow2gan.cli import optional_str, str2bool
from flow2gan.eval.metrics import (
    MetricsConfig,
    metric_available,
    missing_dependency,
    score_pair,
    visqol_available,
)
from flow2gan.eval.pitch import PITCH_KEYS
from flow2gan.runtime import default_device, setup_logging

logger = logging.getLogger("flow2gan.evaluate")

# Seed of numpy's global RNG before each file's pitch extraction: torchcrepe dithers its pitch
# estimates (+-20 cents, triangular) with that RNG, so a fixed seed makes the pitch RMSE reproducible.
PITCH_DITHER_SEED = 0
METRIC_ORDER = ("pesq", "stoi", "mr_stft", "visqol", *PITCH_KEYS, "fsd")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``evaluate`` CLI."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--gt-wav-dir", type=Path, required=True, help="ground-truth WAV root")
    parser.add_argument("--pred-wav-dir", type=Path, required=True, help="predicted WAV root")
    parser.add_argument("--wav-list-file", type=optional_str, default=None, help="relative paths, one a line")
    parser.add_argument("--sampling-rate", type=int, default=24000, help="rate both sides must have")
    parser.add_argument("--n-proc", type=int, default=1, help="worker processes (1 = in-process)")
    parser.add_argument(
        "--use-visqol", type=str2bool, default=False, help="ViSQOL if a binding is importable"
    )
    parser.add_argument(
        "--pitch", type=str2bool, default=True, help="CREPE pitch / periodicity / V-UV metrics"
    )
    parser.add_argument("--fsd-model-path", type=optional_str, default=None, help="local wav2vec2-base dir")
    parser.add_argument("--output-json", type=optional_str, default=None, help="default PRED/metrics.json")
    return parser


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


def _json_safe(value: Any) -> Any:
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


def fsd_for(scored: list[dict[str, Any]], args: argparse.Namespace, device: str) -> float | str:
    """FSD over the scored pairs with the ground truth as the real set ("skipped" below 2 pairs)."""
    from flow2gan.eval.fsd import compute_fsd

    names = [rec["name"] for rec in scored]
    if len(names) < 2:
        logger.warning("FSD needs at least 2 scored pairs, got %d; skipping it", len(names))
        return "skipped"
    gt_paths = [args.gt_wav_dir / name for name in names]
    pred_paths = [args.pred_wav_dir / name for name in names]
    return compute_fsd(gt_paths, pred_paths, args.fsd_model_path, device)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation CLI; returns the process exit code (0 = every pair scored)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    if not args.pred_wav_dir.is_dir():
        logger.error("prediction directory not found: %s", args.pred_wav_dir)
        return 2
    if args.fsd_model_path is not None:
        from flow2gan.eval.fsd import fsd_unavailable_reason

        problem = fsd_unavailable_reason(args.fsd_model_path)
        if problem is not None:
            logger.error("%s", problem)
            return 2
    names = list_pairs(args.pred_wav_dir, args.wav_list_file)
    device = str(default_device())
    use_visqol = args.use_visqol and visqol_available()
    if args.use_visqol and not use_visqol:
        logger.warning("ViSQOL requested but no Python binding is importable; skipping it")
    wanted = ("pesq", "stoi", "pitch") if args.pitch else ("pesq", "stoi")
    skipped = {group: missing_dependency(group) for group in wanted if not metric_available(group)}
    cfg = MetricsConfig(
        sampling_rate=args.sampling_rate,
        use_visqol=use_visqol,
        pitch=args.pitch and "pitch" not in skipped,
        device=device,
        pesq="pesq" not in skipped,
        stoi="stoi" not in skipped,
    )
    records = run_jobs([(name, args.gt_wav_dir, args.pred_wav_dir, cfg) for name in names], args.n_proc)
    failed = {rec["name"]: rec["error"] for rec in records if "error" in rec}
    scored = [rec for rec in records if "error" not in rec]
    means: dict[str, Any] = mean_scores(scored)
    if args.use_visqol and not use_visqol:
        means["visqol"] = "skipped"
    if args.fsd_model_path is not None:
        means["fsd"] = fsd_for(scored, args, device)
    output = Path(args.output_json) if args.output_json else args.pred_wav_dir / "metrics.json"
    write_json(output, [{key: _json_safe(value) for key, value in rec.items()} for rec in scored])
    summary = {
        "num_pairs": len(records),
        "num_scored": len(scored),
        "failed": failed,
        "means": means,
        "skipped_metrics": skipped,
    }
    write_json(output.with_name(f"{output.stem}_summary.json"), summary)
    for name, error in failed.items():
        logger.warning("not scored: %s (%s)", name, error)
    print(format_table(means, len(scored), len(records)))
    for group, reason in skipped.items():
        print(f"{group} metrics skipped: {reason}")
    if failed:
        print(f"{len(failed)} pair(s) not scored: {', '.join(sorted(failed))}")
    return 0 if records and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
