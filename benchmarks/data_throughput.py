"""Does data loading keep up with training? Batches/s of the training data pipeline alone vs the stage-1 step.

``python benchmarks/data_throughput.py [--wav-dir ../shared/data/ljspeech-32] [--batch-size 256]``

Data: the training loaders (random 1.5 s crops, gain, resampling to the model rate, collate) over a
manifest of ``--wav-dir`` (repeated to fill the batches) and over Shar shards of it, with 0 workers
(the cost of one worker) and ``--num-workers``. Step: one flow-matching training step (mel, forward,
backward, ScaledAdam) of ``--model-name`` on a batch of the same crops. Wall and CPU seconds are both
reported: the step's on ``--threads`` threads. Prints a table; nothing is written but a temporary dir.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.amp import GradScaler

from flow2gan.bin.prepare_manifests import repeat_recordings, scan_recordings, write_shar
from flow2gan.features import mel_frontend
from flow2gan.runtime import tune_malloc
from flow2gan.training.data import make_train_loaders, set_loader_epoch
from flow2gan.training.loop import update
from flow2gan.training.options import common_options, flow_matching_options, pretrain_parser
from flow2gan.training.stages import FlowMatchingStage

REPO = Path(__file__).resolve().parent.parent


def time_batches(mixer, batches: int) -> tuple[float, float, tuple]:
    """(wall s, CPU s of this process) per batch over ``batches`` batches after a first (warm-up) one."""
    set_loader_epoch(mixer.loaders, 1)
    iterator = iter(mixer)
    _, first = next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in itertools.islice(iterator, batches):
        pass
    return (time.perf_counter() - wall) / batches, (time.process_time() - cpu) / batches, first


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wav-dir", type=Path, default=REPO.parent / "shared" / "data" / "ljspeech-32")
    parser.add_argument("--batch-size", type=int, default=256, help="stage-1 default (per GPU)")
    parser.add_argument("--batches", type=int, default=4, help="timed data batches per setting")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--model-name", default="mel_24k_base")
    parser.add_argument("--step-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--steps", type=int, default=1, help="timed training steps (after one warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_malloc()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recordings = scan_recordings(args.wav_dir)
    if len(recordings) == 0:
        raise SystemExit(f"no audio files under {args.wav_dir}")
    need = args.batch_size * (args.batches + 1) * max(1, args.num_workers)
    recordings = repeat_recordings(recordings, -(-need // len(recordings)))
    train_args = ["--train-recordings", "x", "--valid-recordings", "x", "--model-name", args.model_name]
    parsed = pretrain_parser().parse_args(train_args)
    stage = FlowMatchingStage(common_options(parsed), flow_matching_options(parsed))
    sr = stage.generator.config.sampling_rate
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "train.jsonl.gz"
        recordings.to_file(manifest)
        shar = Path(tmp) / "shar"
        write_shar(recordings, shar, shard_size=-(-len(recordings) // (4 * max(1, args.num_workers))))
        for source in ("manifest", "shar"):
            for workers in sorted({0, args.num_workers}):
                paths, shar_dirs = ([str(manifest)], []) if source == "manifest" else ([], [str(shar)])
                mixer = make_train_loaders(paths, None, sr, args.batch_size, workers, shar_dirs=shar_dirs)
                wall, cpu, batch = time_batches(mixer, args.batches)
                label = f"data, {source}, {workers} workers"
                rows.append((label, wall, cpu if workers == 0 else float("nan")))
        audio, lens, _ = batch
    step_batch = args.step_batch_size or args.batch_size
    audio = audio[:step_batch].repeat(-(-step_batch // audio.shape[0]), 1)[:step_batch]
    lens = lens[:step_batch].repeat(-(-step_batch // lens.shape[0]))[:step_batch]
    mel_fn = mel_frontend(stage.generator.config)
    scaler = GradScaler("cpu", enabled=False)
    stage.module.train()
    times = []
    for b in range(args.steps + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        update(stage, scaler, stage.losses(stage.module, mel_fn(audio), audio, lens, b), b)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall = sum(t[0] for t in times[1:]) / args.steps
    cpu = sum(t[1] for t in times[1:]) / args.steps
    scale = args.batch_size / step_batch
    rows.append((f"train step, {args.model_name}, batch {step_batch}", wall, cpu))
    if scale != 1:
        rows.append((f"  scaled to batch {args.batch_size} (linear)", wall * scale, cpu * scale))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"batch {args.batch_size} x {audio.shape[1] / sr:.2f} s at {sr} Hz; {args.threads} step threads")
    print("| what | wall s / batch | batches/s | CPU s / batch |\n|---|---|---|---|")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.3f} | {1 / wall:.3g} | {cpu:.3f} |")
    print(f"peak RSS {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
