"""Every GPU figure flow2gan needs, in one prepared run of about 6 minutes (issue 18).

    bash benchmarks/gpu_check.sh                        # on the GPU machine (see benchmarks/README.md)
    python benchmarks/gpu_check.py --device cpu --quick # tiny sizes on the CPU: what CI runs

Sections, in this order (``--sections`` picks some), each recorded on its own: an exception is written
to the report and the next section runs, and the report is rewritten after each section, so a run cut
short still returns what it measured.

1. ``inference``: ``benchmarks/speed.py`` rows (``speed.measure``, in this process) for flow2gan
   ``mel_24k_base`` 1/2/4 steps, the Vocos-like and BigVGAN-like baselines and the 60 s single-utterance
   row, at batch 16 x 1 s, fp32 and bf16 autocast;
2. ``bf16_accuracy``: max |bf16 - fp32| of every ``test_data/mel`` file, 1/2/4 steps, same start noise
   (``benchmarks/precision.py``), random weights;
3. ``training``: steps/s and peak memory of the stage-1 step at the recipe's batch (256 x 1.5 s; on an
   out-of-memory error the batch is halved until it fits, and the report says so) and of the stage-2
   (GAN) step at 64, fp32 and fp16, through the training code (``benchmarks/training_speed.py``);
4. ``compiled`` (CUDA only): ``torch.compile``d decoders, and CUDA graphs (``mode="reduce-overhead"``);
5. ``learning``: ``benchmarks/learning.py`` (the real-speech learning benchmark) on the LJ Speech subset
   (26 files to train on, LJ001-0027..0032 held out) for the minutes left, if that script exists.

Writes ``gpu_check.json`` and ``gpu_check.md`` (plus the learning benchmark's results, summary and curve)
to ``--out`` (default ``$OUT``, else ``gpu_check_out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))

import precision  # noqa: E402
import speed  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data" / "ljspeech-32"
CARRIED_DATA = REPO / ".gpu_data" / "ljspeech-32"
HELD_OUT = tuple(f"LJ001-{i:04d}.wav" for i in range(27, 33))
EAGER_ROWS = tuple(
    (row, autocast)
    for row in ("flow2gan-1", "flow2gan-2", "flow2gan-4", "vocos", "bigvgan-v2")
    for autocast in (None, "bf16")
) + (("flow2gan-1-long", None),)
TRAINING_RUNS = tuple((stage, dtype) for stage in ("pretrain", "finetune") for dtype in ("fp32", "fp16"))
FULL = {
    "budget_min": 6.0,
    "batch_size": 16,
    "seconds": 1.0,
    "long_seconds": 60.0,
    "runs": 20,
    "warmup": 3,
    "time_budget": 5.0,
    "model_name": "mel_24k_base",
    "gan_name": "gan_multi_scale_mel_recon",
    "stage1_batch": 256,
    "stage2_batch": 64,
    "train_seconds": 1.5,
    "train_steps": 5,
    "accuracy_frames": None,
    "rows": EAGER_ROWS,
    "training_runs": TRAINING_RUNS,
    "learning_train_files": 26,
    "learning_heldout_files": 6,
    "learning_args": (),
}
QUICK = {
    "budget_min": 1.0,
    "batch_size": 1,
    "seconds": 0.25,
    "long_seconds": 1.0,
    "runs": 1,
    "warmup": 1,
    "time_budget": 1.0,
    "model_name": "mel_24k_small",
    "gan_name": "gan_small_multi_scale_mel_recon",
    "stage1_batch": 2,
    "stage2_batch": 2,
    "train_seconds": 0.5,
    "train_steps": 1,
    "accuracy_frames": 12,
    "rows": (("flow2gan-1", None), ("flow2gan-1", "bf16"), ("vocos", None)),
    "training_runs": (("pretrain", "fp32"), ("pretrain", "fp16"), ("finetune", "fp32")),  # CPU fp16 is slow
    "learning_train_files": 2,
    "learning_heldout_files": 1,
    "learning_args": ("--batch-size", "4", "--duration", "0.5", "--eval-every", "10"),  # 1 batch per epoch
}
# torch.compile'd decoders (mode "default"), and with CUDA graphs ("reduce-overhead").
COMPILED_ROWS = (
    ("flow2gan-1", "bf16", "default"),
    ("flow2gan-1", "bf16", "reduce-overhead"),
    ("flow2gan-4", "bf16", "reduce-overhead"),
)


COMPILE_RESERVE_MIN = 2.0
SECTIONS = ("inference", "bf16_accuracy", "training", "compiled", "learning")


class Report:
    """Results by section, errors by section, written as JSON and Markdown after every section."""

    def __init__(self, out: Path, environment: dict[str, Any], settings: dict[str, Any]) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"environment": environment, "settings": settings, "errors": {}}
        self.start = time.perf_counter()

    def elapsed_min(self) -> float:
        """Minutes since the run started."""
        return (time.perf_counter() - self.start) / 60

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[dict[str, Any]]:
        """Collect one section's results; an exception is recorded (with its traceback) instead of raised."""
        results: dict[str, Any] = {}
        self.data[name] = results
        begin = time.perf_counter()
        print(f"# {name} ...", flush=True)
        try:
            yield results
        except Exception as exc:  # one failing section must not lose the others' figures
            self.data["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            print(f"# {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
        results["section_s"] = round(time.perf_counter() - begin, 1)
        self.save()

    def save(self) -> None:
        """Write ``gpu_check.json`` and ``gpu_check.md``."""
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str))
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def markdown(data: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    env = data["environment"]
    machine = env.get("gpu") or env.get("cpu")
    lines = [f"# gpu_check: {machine} | torch {env['torch']} | {data['settings']['mode']}", ""]
    rows = data.get("inference", {}).get("rows", []) + data.get("compiled", {}).get("rows", [])
    if rows:
        lines += [
            "| model | precision | compiled | input | xRT | median wall (ms) | peak memory (MB)* |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            memory = r["peak_cuda_mb"] if r["peak_cuda_mb"] is not None else r["peak_rss_mb"]
            lines.append(
                f"| {r['model']} | {r['precision']} | {r['compiled'] or '–'} | {r['batch']} × "
                f"{r['out_samples'] / speed.SAMPLE_RATE:.2f} s | {r['xrt']:.1f} | {1000 * r['wall_s']:.2f} "
                f"| {memory:.0f} |"
            )
        lines += ["", "\\* CUDA: peak allocated during the row; CPU: the process's peak RSS so far.", ""]
    accuracy = data.get("bf16_accuracy", {}).get("max_abs_diff")
    if accuracy:
        lines += ["| steps | max abs(bf16 - fp32) |", "|---|---|"]
        lines += [f"| {n} | {diff:.2e} |" for n, diff in accuracy.items()]
        lines.append("")
    steps = data.get("training", {}).get("rows", [])
    if steps:
        lines += [
            "| stage | dtype | batch (asked) | steps/s | audio s / s | peak memory (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for r in steps:
            memory = "–" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            lines.append(
                f"| {r['stage']} | {r['dtype']} | {r['batch']} ({r['batch_asked']}) | "
                f"{r['steps_per_s']:.2f} | {r['audio_s_per_s']:.1f} | {memory} |"
            )
        lines.append("")
    learning = data.get("learning", {})
    if "summary" in learning:
        lines += [learning["summary"], ""]
    elif "skipped" in learning:
        lines += [f"learning: {learning['skipped']}", ""]
    if "note" in learning:
        lines += [f"learning: {learning['note']}", ""]
    for skipped in data.get("compiled", {}).get("skipped", []):
        lines.append(f"compiled row skipped: {skipped}")
    for name, error in data["errors"].items():
        lines.append(f"**{name} failed**: {error.splitlines()[0]}")
    return "\n".join(lines) + "\n"


def speed_config(settings: dict[str, Any], device: str) -> dict[str, Any]:
    """The ``speed.measure`` config of a row (flow2gan rows are ``mel_24k_base``)."""
    return {
        "device": device,
        "threads": torch.get_num_threads(),
        "batch_size": settings["batch_size"],
        "seconds": settings["seconds"],
        "long_seconds": settings["long_seconds"],
        "runs": settings["runs"],
        "warmup": settings["warmup"],
        "time_budget": settings["time_budget"],
        "model_name": "mel_24k_base",
        "tune_malloc": True,
        "compile": False,
        "compile_mode": None,
        "autocast": None,
        "profile": False,
        "profile_rows": 0,
    }


def inference(
    results: dict[str, Any],
    settings: dict[str, Any],
    device: str,
    compiled: bool,
    minutes_left: Callable[[], float] = lambda: float("inf"),
) -> None:
    """``speed.py`` rows in this process: eager fp32/bf16, or (``compiled``) the torch.compile rows.

    A compiled row (compiling takes long and unknown time) starts only with ``COMPILE_RESERVE_MIN``
    minutes of the budget left; the rows not started are listed under ``skipped``.
    """
    cfg = speed_config(settings, device)
    plan = COMPILED_ROWS if compiled else [(row, autocast, None) for row, autocast in settings["rows"]]
    results["rows"] = []
    for name, autocast, mode in plan:
        if compiled and minutes_left() < COMPILE_RESERVE_MIN:
            results.setdefault("skipped", []).append(f"{name} {autocast} {mode}: out of time")
            continue
        row_cfg = {**cfg, "autocast": autocast, "compile": mode is not None, "compile_mode": mode}
        row = speed.measure(name, row_cfg)
        row.update(precision=autocast or "fp32", compiled=mode)
        results["rows"].append(row)
        print(f"#   {name} {row['precision']} {mode or ''}: xRT {row['xrt']:.1f}", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()


def bf16_accuracy(results: dict[str, Any], settings: dict[str, Any], device: str) -> None:
    """Max |bf16 - fp32| over ``test_data/mel`` per step count (random weights, same start noise).

    Quick mode: the first ``accuracy_frames`` frames of each mel (bf16 is very slow on most CPUs)."""
    from flow2gan import MelAudioGenerator, get_generator_config

    torch.manual_seed(0)
    model = MelAudioGenerator(get_generator_config(settings["model_name"])).eval().to(device)
    mels = sorted((REPO / "test_data" / "mel").glob("*.pt"))
    results["files"] = [p.name for p in mels]
    results["max_abs_diff"] = {}
    for n in (1, 2, 4):
        worst = 0.0
        for path in mels:
            mel = torch.load(path, map_location=device, weights_only=True)[..., : settings["accuracy_frames"]]
            noise = 0.1 * torch.randn(1, mel.shape[-1] * 256, generator=torch.Generator().manual_seed(0))
            fp32, bf16 = precision.fp32_and_bf16(model, mel, noise.to(device), n)
            worst = max(worst, (fp32 - bf16).abs().max().item())
        results["max_abs_diff"][n] = worst


def training(results: dict[str, Any], settings: dict[str, Any], device: str, work: Path) -> None:
    """Stage-1 and stage-2 steps/s and peak memory, fp32 and fp16, falling back to smaller batches on OOM."""
    import training_speed

    results["rows"] = []
    for stage, dtype in settings["training_runs"]:
        row = training_speed.measure_with_fallback(
            stage,
            settings["stage1_batch" if stage == "pretrain" else "stage2_batch"],
            dtype,
            device,
            model_name=settings["model_name"],
            gan_name=settings["gan_name"],
            seconds=settings["train_seconds"],
            steps=settings["train_steps"],
            exp_dir=work / f"{stage}-{dtype}",
        )
        results["rows"].append(row)
        print(f"#   {stage} {dtype} batch {row['batch']}: {row['steps_per_s']:.2f} steps/s", flush=True)


def learning(
    results: dict[str, Any],
    settings: dict[str, Any],
    data_dir: Path,
    minutes: float,
    out: Path,
    device: str,
    work: Path,
) -> None:
    """Run ``benchmarks/learning.py`` (if present) on the LJ subset for ``minutes`` of training."""
    script = BENCHMARKS / "learning.py"
    if not script.is_file():
        results["skipped"] = "benchmarks/learning.py is not in this checkout (issue 11 adds it)"
        return
    if not data_dir.is_dir():
        results["skipped"] = f"no LJ Speech subset at {data_dir} (run benchmarks/gpu_check_prepare.sh)"
        return
    train_dir, held_dir = work / "lj-train", work / "lj-heldout"
    for folder in (train_dir, held_dir):
        folder.mkdir(parents=True, exist_ok=True)
    wavs = sorted(data_dir.glob("*.wav"))
    held = [w for w in wavs if w.name in HELD_OUT][: settings["learning_heldout_files"]]
    train = [w for w in wavs if w.name not in HELD_OUT][: settings["learning_train_files"]]
    for folder, files in ((train_dir, train), (held_dir, held)):
        for wav in files:
            (folder / wav.name).symlink_to(wav.resolve())
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True).stdout
    cmd = [
        sys.executable, str(script), "--train-dir", str(train_dir), "--heldout-dir", str(held_dir),
        "--minutes", f"{minutes:.2f}", "--out", str(work / "learning"), "--pitch", "0",
        *settings["learning_args"],
    ]  # fmt: skip
    if "--device" in help_text:
        cmd += ["--device", device]
    elif device != "cpu":
        results["note"] = "learning.py has no --device option: it trained on the CPU"
    results["command"] = " ".join(cmd)
    results["minutes"] = minutes
    subprocess.run(cmd, check=True)
    for name in ("results.json", "summary.md", "curve.png"):
        produced = work / "learning" / name
        if produced.is_file():
            shutil.copy(produced, out / f"learning_{name}")
    summary = work / "learning" / "summary.md"
    if summary.is_file():
        results["summary"] = summary.read_text()


def environment(device: str) -> dict[str, Any]:
    """``speed.environment`` plus the CUDA facts."""
    env = speed.environment({"device": device})
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu_memory_gb=props.total_memory / 2**30,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and a small model (CI smoke run)")
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: $OUT, else gpu_check_out)"
    )
    parser.add_argument(
        "--budget-minutes", type=float, default=None, help="whole run; learning gets the rest"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="LJ Speech subset (default: ../shared/data)"
    )
    parser.add_argument(
        "--sections", nargs="+", default=["inference", "bf16_accuracy", "training", "learning"]
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the sections in order; returns 1 if any failed."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available (use --device cpu --quick)")
    settings = dict(QUICK if args.quick else FULL)
    settings["mode"] = ("quick" if args.quick else "full") + f" on {args.device}"
    budget = args.budget_minutes or settings["budget_min"]
    out = args.out or Path(os.environ.get("OUT") or "gpu_check_out")
    data_dir = args.data_dir or (SHARED_DATA if SHARED_DATA.is_dir() else CARRIED_DATA)
    report = Report(out, environment(args.device), settings)
    sections: dict[str, Callable[[dict[str, Any], Path], None]] = {
        "inference": lambda r, w: inference(r, settings, args.device, compiled=False),
        "bf16_accuracy": lambda r, w: bf16_accuracy(r, settings, args.device),
        "training": lambda r, w: training(r, settings, args.device, w),
        "compiled": lambda r, w: inference(
            r, settings, args.device, compiled=True, minutes_left=lambda: budget - report.elapsed_min()
        ),
        "learning": lambda r, w: learning(
            r, settings, data_dir, max(0.1, budget - report.elapsed_min() - 1.0) * 0.6, out, args.device, w
        ),
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name in args.sections or [s for s in SECTIONS if args.device == "cuda" or s != "compiled"]:
            with report.section(name) as results:
                sections[name](results, Path(tmp) / name)
    report.data["total_min"] = round(report.elapsed_min(), 2)
    report.save()
    print((out / "gpu_check.md").read_text())
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
