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
import logging
import sys
from pathlib import Path
from typing import Any

from flow2gan.cli import DefaultsHelpFormatter, optional_str, prog_name, str2bool
from flow2gan.eval.metrics import MetricsConfig, metric_available, missing_dependency, visqol_available
from flow2gan.eval.pairs import format_table, json_safe, list_pairs, mean_scores, run_jobs, write_json
from flow2gan.runtime import default_device, setup_logging

logger = logging.getLogger("flow2gan.evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``evaluate`` CLI."""
    parser = argparse.ArgumentParser(
        prog=prog_name("flow2gan.bin.evaluate"),
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
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
    write_json(output, [{key: json_safe(value) for key, value in rec.items()} for rec in scored])
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
