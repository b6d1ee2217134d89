"""Inference speed of flow2gan (1/2/4 steps) vs Vocos-like and BigVGAN-v2-like baselines.

Paper protocol: a batch of 16 random log-mels of 1 s at 24 kHz (94 frames -> 24064 samples), warm-up,
then the median wall time of several runs under ``torch.inference_mode()``. Every row runs in a fresh
subprocess so that its peak RSS belongs to that model alone. Run ``python benchmarks/speed.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from flow2gan.runtime import tune_malloc

SAMPLE_RATE = 24000
MEL_HOP = 256
N_MELS = 100
GEMM_SIZE = 2048
LONG_RUN_S = 2.0
ROWS = (
    "flow2gan-1",
    "flow2gan-2",
    "flow2gan-4",
    "vocos",
    "bigvgan-v2",
    "gemm",
    "gemm-conv1x1",
    "flow2gan-1-long",
)
GEMM_ROWS = ("gemm", "gemm-conv1x1")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
QUICK = {"batch_size": 2, "seconds": 0.5, "long_seconds": 4.0, "runs": 1, "warmup": 1, "time_budget": 2.0}


def default_threads() -> int:
    """All cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def random_mel(batch: int, seconds: float, device: torch.device) -> Tensor:
    """Random log-mel of ``seconds`` audio at 24 kHz: (batch, 100, 1 + seconds * sr // 256)."""
    frames = 1 + int(seconds * SAMPLE_RATE) // MEL_HOP
    return torch.randn(batch, N_MELS, frames, device=device)


def random_condition(config: Any, batch: int, seconds: float, device: torch.device) -> Tensor:
    """A random log-mel, or random 6 kbps codes (batch, 8, seconds * 75) for a token model."""
    from flow2gan.config import TokenGeneratorConfig

    if not isinstance(config, TokenGeneratorConfig):
        return random_mel(batch, seconds, device)
    frames = round(seconds * config.frame_rate)
    return torch.randint(0, config.codebook_size, (batch, config.n_codebooks(6.0), frames), device=device)


def build_row(name: str, cfg: dict[str, Any], device: torch.device) -> tuple[Callable[[], Tensor], int]:
    """The forward closure and parameter count of benchmark row ``name`` (inputs already on device)."""
    if name in GEMM_ROWS:
        a, b = (torch.randn(GEMM_SIZE, GEMM_SIZE, device=device) for _ in range(2))
        if name == "gemm":
            return lambda: torch.mm(a, b), 0
        x, w = a.unsqueeze(0), b.unsqueeze(-1)
        return lambda: torch.nn.functional.conv1d(x, w), 0
    if name.startswith("flow2gan"):
        from flow2gan import get_generator_config
        from flow2gan.models.token_generator import build_generator

        config = get_generator_config(cfg["model_name"])
        model = build_generator(config).eval().to(device)
        if cfg["compile"]:
            mode = cfg.get("compile_mode")
            for estimator in model.estimators:  # the STFT/iSTFT stay eager: compiling istft takes minutes
                estimator.decoder.forward = torch.compile(estimator.decoder.forward, dynamic=False, mode=mode)
        steps = int(name.split("-")[1])
        if name.endswith("-long"):
            cond = random_condition(config, 1, cfg["long_seconds"], device)
        else:
            cond = random_condition(config, cfg["batch_size"], cfg["seconds"], device)
        forward = lambda: model.infer(cond=cond, n_timesteps=steps)  # noqa: E731
    else:
        from baselines import BigVGANv2Like, VocosLike

        model = (VocosLike() if name == "vocos" else BigVGANv2Like()).eval().to(device)
        mel = random_mel(cfg["batch_size"], cfg["seconds"], device)
        forward = lambda: model(mel)  # noqa: E731
    if cfg.get("autocast"):
        forward = autocast(forward, device, AUTOCAST_DTYPES[cfg["autocast"]])
    return forward, sum(p.numel() for p in model.parameters())


def autocast(forward: Callable[[], Tensor], device: torch.device, dtype: torch.dtype) -> Callable[[], Tensor]:
    """``forward`` run under ``torch.autocast(device.type, dtype)``."""

    def run() -> Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return forward()

    return run


def timed(forward: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float]:
    """One synchronised call: (output, wall seconds)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = forward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def measure(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Benchmark one row in this process: FLOP-counted warm-up, more warm-ups, then timed runs."""
    device = torch.device(cfg["device"])
    if cfg["tune_malloc"]:
        tune_malloc()
    load = os.getloadavg()
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    idle_rss = peak_rss_mb()
    forward, n_params = build_row(name, cfg, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            out, first = timed(forward, device)
        flops = counter.get_total_flops()
        for _ in range(cfg["warmup"] - 1):
            if first > LONG_RUN_S:
                break
            timed(forward, device)
        times: list[float] = []
        while len(times) < cfg["runs"] and (not times or sum(times) < cfg["time_budget"]):
            times.append(timed(forward, device)[1])
        if cfg["profile"]:
            profile(forward, device, cfg["profile_rows"])
    wall = statistics.median(times)
    audio_s = None if name in GEMM_ROWS else out.shape[0] * out.shape[-1] / SAMPLE_RATE
    return {
        "model": name,
        "params_m": n_params / 1e6,
        "batch": out.shape[0] if audio_s else None,
        "out_samples": out.shape[-1] if audio_s else None,
        "audio_s": audio_s,
        "gflop": flops / 1e9,
        "gflop_per_audio_s": flops / 1e9 / audio_s if audio_s else None,
        "runs": len(times),
        "times_s": times,
        "wall_s": wall,
        "xrt": audio_s / wall if audio_s else None,
        "gflops": flops / 1e9 / wall,
        "peak_rss_mb": peak_rss_mb(),
        "idle_rss_mb": idle_rss,
        "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "loadavg_start": load,
    }


def profile(forward: Callable[[], Tensor], device: torch.device, rows: int) -> None:
    """Print the top ops (per input shape) of one extra forward, sorted by self CPU time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        forward()
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows)
    print(table, file=sys.stderr)


def run_in_subprocess(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Measure one row in a fresh interpreter and return its result dict."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", name, "--worker-out", str(result_path)]
        env = dict(os.environ)
        proc = subprocess.run([*cmd, "--worker-config", json.dumps(cfg)], env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark row {name!r} failed with exit code {proc.returncode}")
        return json.loads(result_path.read_text())


def fmt(value: float | None, digits: int) -> str:
    """A number with ``digits`` decimals, or a dash."""
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Results as a markdown table, with xRT relative to the Vocos row when present."""
    vocos = next((r["xrt"] for r in results if r["model"] == "vocos"), None)
    cuda = any(r["peak_cuda_mb"] is not None for r in results)
    header = (
        "| model | input | runs | params (M) | GFLOP / audio s | median wall (s) | xRT | GFLOP/s "
        "| peak RSS (MB) | xRT / Vocos |" + (" peak CUDA (MB) |" if cuda else "")
    )
    lines = [header, "|---" * header.count(" |") + "|"]
    for r in results:
        if r["audio_s"]:
            shape = f"{r['batch']} × {r['out_samples'] / SAMPLE_RATE:.2f} s"
        else:
            shape = f"{GEMM_SIZE}² fp32"
        rel = r["xrt"] / vocos if r["xrt"] and vocos else None
        lines.append(
            f"| {r['model']} | {shape} | {r['runs']} | {fmt(r['params_m'] or None, 1)} "
            f"| {fmt(r['gflop_per_audio_s'], 1)} | {fmt(r['wall_s'], 3)} | {fmt(r['xrt'], 2)} "
            f"| {fmt(r['gflops'], 1)} | {fmt(r['peak_rss_mb'], 0)} | {fmt(rel, 3)} |"
            + (f" {fmt(r['peak_cuda_mb'], 0)} |" if cuda else "")
        )
    return "\n".join(lines)


def environment(cfg: dict[str, Any]) -> dict[str, Any]:
    """Machine and software facts printed above the table."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln]
        info["cpu"] = names[0] if names else info["cpu"]
    if cfg["device"] == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", choices=ROWS, default=list(ROWS), metavar="ROW", help=f"rows: {' '.join(ROWS)}"
    )
    parser.add_argument(
        "--model-name",
        default="mel_24k_base",
        help="generator config of the flow2gan rows; a token config (encodec_24k_*) gets 6 kbps codes",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=default_threads(), help="torch intra-op threads")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=1.0, help="audio seconds per utterance")
    parser.add_argument("--long-seconds", type=float, default=60.0, help="length of the long-input row")
    parser.add_argument("--runs", type=int, help="max timed runs per row (default 5 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up runs, the first is FLOP-counted")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=25.0,
        help="stop timing a row once its timed runs add up to this many seconds (at least one run)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: " + json.dumps(QUICK))
    parser.add_argument(
        "--no-tune-malloc",
        dest="tune_malloc",
        action="store_false",
        help="leave glibc malloc at its defaults (else every row calls flow2gan.runtime.tune_malloc)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the flow2gan decoders (warm-up includes compiling)",
    )
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode with --compile, e.g. reduce-overhead (CUDA graphs)",
    )
    parser.add_argument(
        "--autocast", choices=sorted(AUTOCAST_DTYPES), default=None, help="run every row under autocast"
    )
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table per row")
    parser.add_argument("--profile-rows", type=int, default=25)
    parser.add_argument("--json", type=Path, help="write environment and results to this file")
    parser.add_argument("--worker", choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    """Run the selected rows (each in its own subprocess) and print a markdown table."""
    args = parse_args()
    if args.worker:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        result = measure(args.worker, json.loads(args.worker_config))
        args.worker_out.write_text(json.dumps(result))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    cfg = {
        "model_name": args.model_name,
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "seconds": args.seconds,
        "long_seconds": args.long_seconds,
        "runs": args.runs or (5 if args.device == "cpu" else 20),
        "warmup": max(1, args.warmup),
        "time_budget": args.time_budget,
        "tune_malloc": args.tune_malloc,
        "compile": args.compile,
        "compile_mode": args.compile_mode,
        "autocast": args.autocast,
        "profile": args.profile,
        "profile_rows": args.profile_rows,
    }
    if args.quick:
        cfg.update(QUICK)
    env = environment(cfg)
    malloc = "tuned" if cfg["tune_malloc"] else "default"
    print(
        f"# {env['cpu']} | torch {env['torch']} | device {cfg['device']} | threads {cfg['threads']} "
        f"| malloc {malloc} | autocast {cfg['autocast'] or 'off'} | flow2gan rows: {cfg['model_name']}"
    )
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in env['loadavg_start'])}", flush=True)
    start = time.perf_counter()
    results = []
    for name in (row for row in ROWS if row in args.models):
        results.append(run_in_subprocess(name, cfg))
        r = results[-1]
        print(
            f"#   {name}: {r['runs']} runs, median {r['wall_s']:.3f} s, times "
            f"{' '.join(f'{t:.3f}' for t in r['times_s'])}, load {r['loadavg_start'][0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
    env["loadavg_end"] = os.getloadavg()
    env["total_s"] = time.perf_counter() - start
    print(markdown_table(results))
    idle = statistics.median(r["idle_rss_mb"] for r in results)
    print(
        f"\n# {env['total_s']:.0f} s total; load average at end: "
        f"{' '.join(f'{x:.2f}' for x in env['loadavg_end'])}; a worker's RSS before building its model "
        f"is ~{idle:.0f} MB; FLOPs exclude FFTs (FlopCounterMode does not count them)"
    )
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "config": cfg, "results": results}, indent=2))


if __name__ == "__main__":
    main()
