"""Results of the learning benchmark (``learning.py``): evaluation points, results.json, curve and table.

``results.json`` is strict JSON: metrics not computed (NaN) are written as ``null`` and read back as NaN.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from learning_eval import METRICS, HeldOut, eval_generator

from flow2gan.models.generator import MelAudioGenerator

logger = logging.getLogger("learning")


class Recorder:
    """Collects evaluation points and keeps results.json current after each one.

    ``eval_threads`` (> 0): torch threads while evaluating, e.g. every core while the other training
    processes wait at a barrier; the training thread count is restored afterwards.
    """

    def __init__(
        self, out: Path, items: list[HeldOut], eval_threads: int = 0, results: dict | None = None
    ) -> None:
        self.out = out
        self.items = items
        self.eval_threads = eval_threads
        self.results: dict = results or {"baselines": {}, "points": [], "final_checkpoint": None}

    @classmethod
    def load(cls, out: Path, items: list[HeldOut], eval_threads: int = 0) -> Recorder:
        """The recorder of ``out/results.json`` as the last save left it (``null`` metrics read as NaN)."""
        return cls(
            out, items, eval_threads, json.loads((out / "results.json").read_text(), object_hook=nan_metrics)
        )

    def point(
        self, minutes: float, system: str, generator: MelAudioGenerator, n_steps: int, pitch: bool = False
    ) -> None:
        """Evaluate ``generator`` with ``n_steps`` and record it at ``minutes`` of training."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.eval_threads or threads)
        try:
            metrics = eval_generator(generator, self.items, n_steps, pitch)
        finally:
            torch.set_num_threads(threads)
        self.results["points"].append({"minutes": round(minutes, 3), "system": system, **metrics})
        logger.info("%6.2f min  %-14s %s", minutes, system, fmt(metrics))
        self.save()

    def save(self) -> None:
        """Write ``results.json`` atomically enough for polling (write then rename)."""
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(json_safe(self.results), indent=1, allow_nan=False))
        tmp.replace(self.out / "results.json")


def json_safe(value: object) -> object:
    """``value`` with every NaN float replaced by None, so results.json is strict JSON (``null``)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def nan_metrics(obj: dict) -> dict:
    """``json.loads`` hook: a metric that is ``null`` (not computed) reads back as NaN."""
    return {k: math.nan if v is None and k in METRICS else v for k, v in obj.items()}


def fmt(metrics: dict[str, float]) -> str:
    """One-line metric summary."""
    return " ".join(f"{k} {metrics[k]:.3f}" for k in METRICS)


def plot_curve(results: dict, path: Path, title: str) -> None:
    """PESQ, STOI, V/UV F1 and periodicity vs training minutes; baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("pesq", "PESQ (wb) ↑"),
        ("stoi", "STOI ↑"),
        ("vuv_f1", "V/UV F1 ↑"),
        ("periodicity", "periodicity error ↓"),
    )
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=80)
    systems = sorted({p["system"] for p in results["points"]})
    styles = {"griffin_lim": ("k", "--"), "random_phase": ("0.5", ":"), "untrained": ("r", ":")}
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        for system in systems:
            pts = [p for p in results["points"] if p["system"] == system]
            ax.plot([p["minutes"] for p in pts], [p[key] for p in pts], marker="o", ms=3, label=system)
        for name, metrics in results["baselines"].items():
            color, style = styles.get(name, ("b", "-."))
            ax.axhline(metrics[key], color=color, linestyle=style, lw=1, label=name)
        ax.set_xlabel("training minutes")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_table(results: dict) -> str:
    """Markdown table: baselines, then the last point of every system (a stage's last: its averaged model)."""
    lines = ["| system | minutes | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for name, m in results["baselines"].items():
        lines.append(f"| {name} (baseline) | – | " + " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |")
    last: dict[str, dict] = {}
    for p in results["points"]:
        last[p["system"]] = p
    for p in last.values():
        lines.append(
            f"| {p['system']} | {p['minutes']:.1f} | " + " | ".join(f"{p[k]:.3f}" for k in METRICS) + " |"
        )
    return "\n".join(lines)
