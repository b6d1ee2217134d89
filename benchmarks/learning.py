"""Learning benchmark: does the real training pipeline learn a vocoder on real speech within a CPU budget?

``python benchmarks/learning.py --train-dir DIR --heldout-dir DIR [--heldout-dir DIR2] --minutes M --out OUT``

Runs the project's own pipeline on the audio of ``--train-dir``: lhotse manifests, stage-1 flow-matching
pre-training (``flow2gan.training`` Trainer and FlowMatchingStage, real data loader), averaging over the
last ``--avg-fraction`` of stage 1 (cumulative ``model_avg`` snapshots, as ``save_averaged_model`` does),
stage-2 GAN fine-tuning of the N-step generator (GANStage), then the held-out files are vocoded and
scored. Each stage trains under a wall-clock budget (``--stage1-share`` of ``--minutes`` for stage 1, the
rest for stage 2; evaluation time is not counted) and is evaluated every ``--eval-every`` training
minutes. Metrics (``flow2gan.eval``): wide-band PESQ, STOI, multi-resolution STFT distance, and CREPE
V/UV F1 and periodicity error. Baselines in the same run: the untrained generator, the mel
pseudo-inverse with random phase, and 32 fast Griffin-Lim iterations (momentum 0.99, librosa).
The defaults are the settings measured best for a CPU budget (``mel_24k_small_envelope``, 0.5 s crops,
30 % of the minutes in stage 1, then the 4-step generator at LR 0.02 (Eden2 constant 1500) on the mel
loss, the magnitude-weighted STFT phase-derivative loss on the bins up to 2 kHz (``--phase-loss-scale
90``, ``--phase-loss-weight-power 0.5``, ``--phase-loss-max-freq 2000``) and the autocorrelation
periodicity loss (``--periodicity-loss-scale``; both in :mod:`flow2gan.models.spectral_losses`) for
all of stage 2 — the GAN phase,
``--mel-only-batches N`` with a smaller N, lost at this budget; ``benchmarks/README.md``); the paper's
settings remain the training CLIs' defaults.
``--stage1-checkpoint`` skips stage 1 and starts stage 2 from an earlier run's averaged stage-1
checkpoint (for stage-2 comparisons from one start). Training runs as ``--processes`` data-parallel
processes (DDP over gloo, default: one per usable core, at most 2, one torch thread each), each on its
share of ``--batch-size``; rank 0 keeps the clock, evaluates (on every core, while the other ranks wait)
and averages. On the 2-core machine 2 processes x 1 thread made 1.17x the stage-1 and 1.06x the stage-2
batches of 1 process x 2 threads (``benchmarks/README.md``).

Token models (``--model-name encodec_24k_small --codec SOURCE``): the generator learns from EnCodec codes
(drawn bandwidths in training, ``--bandwidth`` for the evaluation points); the baselines are the untrained
generator and EnCodec's own decoder of the same codes, and ``per_bandwidth`` compares the final generator
with that decoder at each of the four bandwidths. With a randomly initialised codec only the learning
itself is meaningful.

Writes ``OUT/results.json`` (``baselines``, ``points``, ``final_checkpoint``; metrics are means over the
first held-out dir, ``heldout_other`` holds the final systems on the other dirs), ``OUT/curve.png`` and
``OUT/summary.md``. See ``benchmarks/README.md`` for the measured numbers.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from learning_budget import BudgetRun
from learning_eval import (
    GL_ITERS,
    HeldOut,
    at_bandwidth,
    eval_classical,
    eval_codec,
    eval_generator,
    heldout_paths,
    load_heldout,
)
from learning_report import Recorder, fmt, plot_curve, summary_table

from flow2gan import runtime
from flow2gan.bin.prepare_manifests import AUDIO_SUFFIXES, repeat_recordings, scan_recordings
from flow2gan.cli import RawDescriptionDefaultsHelpFormatter
from flow2gan.config import get_generator_config
from flow2gan.features import mel_frontend
from flow2gan.models.token_generator import audio_front_end
from flow2gan.training import distributed
from flow2gan.training.condition import check_codec, load_tokenizer, make_generator
from flow2gan.training.experiment import export_generator
from flow2gan.training.loop import Trainer
from flow2gan.training.options import (
    check_crop_length,
    common_options,
    finetune_parser,
    flow_matching_options,
    gan_options,
    pretrain_parser,
)
from flow2gan.training.stages import FlowMatchingStage, GANStage
from flow2gan.weights import load_checkpoint

logger = logging.getLogger("learning")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Benchmark flags (contract flags first)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=RawDescriptionDefaultsHelpFormatter)
    p.add_argument("--train-dir", type=Path, required=True, help="audio folder to train on")
    p.add_argument(
        "--heldout-dir",
        type=Path,
        action="append",
        required=True,
        help="audio folder to score (repeatable; the first one's means are the results' points)",
    )
    p.add_argument("--minutes", type=float, required=True, help="total training minutes (both stages)")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (results.json, curve.png, checkpoints, ...)"
    )
    p.add_argument("--stage1-share", type=float, default=0.3, help="fraction of --minutes for stage 1")
    p.add_argument(
        "--eval-every",
        type=float,
        default=None,
        help="training minutes between evaluations (default: --minutes / 8, at least 0.5)",
    )
    p.add_argument(
        "--model-name", default="mel_24k_small_envelope", help="generator config name or JSON file"
    )
    p.add_argument(
        "--gan-name",
        default="gan_small_multi_scale_mel_recon",
        help="stage-2 GAN config (mel-loss resolutions, discriminator widths)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="crops per batch, all processes together")
    p.add_argument("--duration", type=float, default=0.5, help="training crop length in seconds")
    p.add_argument("--base-lr", type=float, default=0.035, help="stage-1 peak LR (ScaledAdam)")
    p.add_argument("--lr-batches", type=float, default=7500, help="stage-1 Eden2 LR decay constant")
    p.add_argument("--warmup-batches", type=float, default=100, help="LR warm-up batches of each stage")
    p.add_argument("--avg-fraction", type=float, default=0.5, help="share of each stage that is averaged")
    p.add_argument("--average-period", type=int, default=10, help="batches between model_avg updates")
    p.add_argument("--n-timesteps", type=int, default=4, help="steps of the stage-2 generator")
    p.add_argument("--base-lr-gen", type=float, default=0.02, help="stage-2 generator peak LR")
    p.add_argument("--base-lr-disc", type=float, default=0.02, help="stage-2 discriminator peak LR")
    p.add_argument(
        "--lr-batches-gen",
        type=float,
        default=1500,
        help="stage-2 Eden2 LR decay constant (1500 beat 5000 at 28 and 60 min, benchmarks/README.md)",
    )
    p.add_argument(
        "--gen-start-batch-idx", type=int, default=0, help="GAN phase: discriminator-only batches first"
    )
    p.add_argument(
        "--mel-only-batches",
        type=int,
        default=1_000_000,
        help="stage-2 batches without discriminators (reconstruction losses only) before the GAN phase "
        "(default: all of stage 2)",
    )
    p.add_argument(
        "--mel-recon-loss-scale", type=float, default=45.0, help="stage-2 multi-scale mel L1 weight"
    )
    p.add_argument(
        "--stage1-checkpoint",
        type=Path,
        default=None,
        help="skip stage 1: start stage 2 from this averaged stage-1 checkpoint (e.g. an earlier run's "
        "OUT/stage1-averaged.pt); its --stage1-share of --minutes counts as spent",
    )
    p.add_argument(
        "--phase-loss-scale",
        type=float,
        default=90.0,
        help="stage-2 phase-derivative loss weight (0: off; 90 beat 45 on V/UV F1 and periodicity at 60 min "
        "with two seeds, PESQ +0.02 / -0.07; 180 lost: benchmarks/README.md, rounds K and L)",
    )
    p.add_argument(
        "--phase-loss-n-ffts",
        default="512,1024",
        help="comma-separated STFT sizes of the phase-derivative loss",
    )
    p.add_argument(
        "--phase-loss-weight-power",
        type=float,
        default=0.5,
        help="exponent of the reference's power weighting the phase loss (0.5: by magnitude, 1: by power)",
    )
    p.add_argument(
        "--phase-loss-max-freq",
        type=float,
        default=2000.0,
        help="highest frequency (Hz) the phase loss compares (0: all; 2000 beat all at 60 min with two "
        "seeds, benchmarks/README.md)",
    )
    p.add_argument(
        "--stft-loss-scale", type=float, default=0.0, help="stage-2 linear-STFT loss weight (0: off)"
    )
    p.add_argument(
        "--periodicity-loss-scale",
        type=float,
        default=100.0,
        help="stage-2 autocorrelation periodicity loss weight (0: off; 100 and 300 beat 0 at 60 min, "
        "benchmarks/README.md)",
    )
    p.add_argument(
        "--periodicity-peak-weight",
        type=float,
        default=1.0,
        help="extra weight of the periodicity loss at the reference's pitch period, used when "
        "--periodicity-loss-scale > 0 (default 1, which beat 0 and 3 on PESQ at 60 min with two seeds; 10 "
        "and 30 lost more, one seed; 0: the mean over pitch lags alone)",
    )
    p.add_argument(
        "--mpd-loss-scale",
        type=float,
        default=1.0,
        help="MPD weights (hinge, adversarial, feature matching) in the G/D phase (default 1, the paper's; "
        "5 lost PESQ and left pitch where it was, benchmarks/README.md rounds M and N; 0 = MRD only)",
    )
    p.add_argument(
        "--mrd-loss-scale",
        type=float,
        default=0.1,
        help="MRD weights (hinge, adversarial, feature matching) in the G/D phase, which needs a smaller "
        "--mel-only-batches (default 0.1, the paper's; 0 = MPD only, the MRD is not run)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="data-parallel training processes (DDP, gloo), each on its share of --batch-size "
        "(default: usable cores, max 2)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per training process (default: usable cores / processes)",
    )
    p.add_argument(
        "--pitch",
        type=int,
        default=1,
        help="V/UV F1 and periodicity (CREPE): 0 never (NaN), 1 for the averaged models at the end of each "
        "stage, 2 at every evaluation point as well (~10 s each with tiny)",
    )
    p.add_argument("--pitch-model", default="tiny", choices=["tiny", "full"], help="CREPE model size")
    p.add_argument("--pitch-seconds", type=float, default=3.0, help="CREPE on the first s of each file")
    p.add_argument("--seed", type=int, default=42, help="random seed of both stages' training")
    p.add_argument("--codec", default=None, help="token models: EnCodec hub name or local folder")
    p.add_argument("--bandwidth", type=float, default=6.0, help="token models: kbps of the evaluation")
    args = p.parse_args(argv)
    if any(path.exists() and not path.is_dir() for path in (args.out, *args.out.parents)):
        p.error(f"--out {args.out} is not a folder or is inside a file")
    for folder in (args.train_dir, *args.heldout_dir):
        if not folder.is_dir():
            p.error(f"{folder} is not a folder")
    if not any(f.suffix.lower() in AUDIO_SUFFIXES and f.is_file() for f in args.train_dir.rglob("*")):
        p.error(f"--train-dir {args.train_dir} has no audio files ({', '.join(AUDIO_SUFFIXES)})")
    for folder in args.heldout_dir:
        if not heldout_paths(folder):
            p.error(f"--heldout-dir {folder} has no .wav or .flac files")
    if args.stage1_checkpoint is not None and not args.stage1_checkpoint.is_file():
        p.error(f"--stage1-checkpoint {args.stage1_checkpoint} is not a file")
    for flag, value in (("--processes", args.processes), ("--threads", args.threads)):
        if value is not None and value < 1:
            p.error(f"{flag} must be >= 1 (or left out for the default), got {value}")
    args.processes = args.processes or usable_cores()
    if args.batch_size % args.processes:
        p.error(f"--batch-size {args.batch_size} must split evenly over --processes {args.processes}")
    args.threads = args.threads or max(1, usable_cores() // args.processes)
    try:
        check_codec(get_generator_config(args.model_name), args.codec)
    except (OSError, ValueError) as e:
        p.error(f"--model-name / --codec: {e}")
    positive = {
        "--minutes": args.minutes,
        "--pitch-seconds": args.pitch_seconds,
        "--bandwidth": args.bandwidth,
    }
    if args.eval_every is not None:
        positive["--eval-every"] = args.eval_every
    for flag, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            p.error(f"{flag} must be a finite number > 0, got {value}")
    for flag, value in (("--stage1-share", args.stage1_share), ("--avg-fraction", args.avg_fraction)):
        if not 0 <= value <= 1:
            p.error(f"{flag} must be between 0 and 1, got {value}")
    for flag, value in (("--mpd-loss-scale", args.mpd_loss_scale), ("--mrd-loss-scale", args.mrd_loss_scale)):
        if not (math.isfinite(value) and value >= 0):
            p.error(f"{flag} must be a finite number >= 0, got {value}")
    if args.pitch not in (0, 1, 2):
        p.error(f"--pitch takes 0, 1 or 2, got {args.pitch}")
    if args.stage1_checkpoint is not None and args.stage1_share == 1:
        p.error("--stage1-checkpoint with --stage1-share 1 would train neither stage")
    check_stage_settings(p, args)
    return args


def check_stage_settings(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Parse and check the training CLIs' flags of the stages that will run, before any work.

    A bad setting (e.g. ``--gan-name``, a negative LR or loss weight) is a usage error of ``p`` naming
    the flag, not a failure after the stage-1 minutes.
    """
    paths = run_paths(args)
    stages = []
    if args.stage1_checkpoint is None:
        stages.append(("stage-1", pretrain_parser(), stage1_flags(args, paths), flow_matching_options))
    if args.stage1_share < 1:
        stages.append(("stage-2", finetune_parser(), stage2_flags(args, paths), gan_options))
    for name, parser, flags, build in stages:
        parser.exit_on_error = False  # a bad value raises ArgumentError instead of exiting
        try:
            parsed = parser.parse_args(flags)
            check_crop_length(common_options(parsed), build(parsed), get_generator_config(args.model_name))
        except (argparse.ArgumentError, ValueError) as e:
            p.error(f"{name} settings: {e}")


def usable_cores() -> int:
    """Cores this process may use, at most 2 (the benchmark's reference machine)."""
    return min(2, runtime.usable_cores())


def write_manifests(args: argparse.Namespace, paths: RunPaths) -> None:
    """Train manifest (each file listed 2x so an epoch is a few batches) and a 1-file valid manifest."""
    paths.train.parent.mkdir(parents=True, exist_ok=True)
    recordings = scan_recordings(args.train_dir)
    if len(recordings) == 0:
        raise SystemExit(f"no audio files under {args.train_dir}")
    repeat_recordings(recordings, 2).to_file(paths.train)
    recordings.subset(first=1).to_file(paths.valid)


def common_flags(args: argparse.Namespace, exp: Path, paths: RunPaths) -> list[str]:
    """Flags both training CLIs share (real option parsers, so the run uses the CLI's defaults).

    ``--batch-size`` is per process: the benchmark's batch split over ``--processes``.
    """
    codec = ["--codec", args.codec] if args.codec else []
    return [*codec,
        "--exp-dir", str(exp), "--train-recordings", str(paths.train), "--valid-recordings", str(paths.valid),
        "--model-name", args.model_name, "--batch-size", str(args.batch_size // args.processes),
        "--duration", str(args.duration), "--train-num-workers", "0", "--valid-num-workers", "0",
        "--tensorboard", "false", "--num-epochs", "1000000", "--valid-interval", "100000000",
        "--log-interval", "100", "--average-period", str(args.average_period),
        "--warmup-batches", str(args.warmup_batches), "--seed", str(args.seed), "--device", "cpu",
    ]  # fmt: skip


@dataclass(frozen=True)
class RunPaths:
    """Where a run under ``--out`` keeps its manifests, experiment folders and averaged checkpoints."""

    train: Path
    valid: Path
    exp1: Path
    exp2: Path
    stage1_ckpt: Path


def run_paths(args: argparse.Namespace) -> RunPaths:
    """The files and folders of this run under ``args.out``."""
    data = args.out / "data"
    return RunPaths(
        train=data / "train.jsonl.gz",
        valid=data / "valid.jsonl.gz",
        exp1=args.out / "exp-pretrain",
        exp2=args.out / "exp-finetune",
        stage1_ckpt=args.out / "stage1-averaged.pt",
    )


def stage1_flags(args: argparse.Namespace, paths: RunPaths) -> list[str]:
    """``flow2gan.bin.pretrain`` flags of stage 1: the benchmark's LR schedule."""
    return common_flags(args, paths.exp1, paths) + [
        "--base-lr", str(args.base_lr), "--lr-batches", str(args.lr_batches), "--save-infer-steps", "1",
    ]  # fmt: skip


def stage2_flags(args: argparse.Namespace, paths: RunPaths) -> list[str]:
    """``flow2gan.bin.finetune`` flags of stage 2: the averaged stage-1 generator, the benchmark's losses."""
    return common_flags(args, paths.exp2, paths) + [
        "--generator-model-path", str(paths.stage1_ckpt), "--gan-name", args.gan_name,
        "--n-timesteps", str(args.n_timesteps), "--base-lr-gen", str(args.base_lr_gen),
        "--base-lr-disc", str(args.base_lr_disc), "--lr-batches-gen", str(args.lr_batches_gen),
        "--gen-start-batch-idx", str(args.gen_start_batch_idx),
        "--mel-only-batches", str(args.mel_only_batches),
        "--mel-recon-loss-scale", str(args.mel_recon_loss_scale),
        "--phase-loss-scale", str(args.phase_loss_scale),
        "--phase-loss-n-ffts", args.phase_loss_n_ffts,
        "--phase-loss-weight-power", str(args.phase_loss_weight_power),
        "--phase-loss-max-freq", str(args.phase_loss_max_freq),
        "--stft-loss-scale", str(args.stft_loss_scale),
        "--periodicity-loss-scale", str(args.periodicity_loss_scale),
        "--periodicity-peak-weight", str(args.periodicity_peak_weight),
        "--disc-loss-mp-scale", str(args.mpd_loss_scale),
        "--gen-loss-mp-scale", str(args.mpd_loss_scale),
        "--feat-map-loss-mp-scale", str(args.mpd_loss_scale),
        "--disc-loss-mr-scale", str(args.mrd_loss_scale),
        "--gen-loss-mr-scale", str(args.mrd_loss_scale),
        "--feat-map-loss-mr-scale", str(args.mrd_loss_scale),
    ]  # fmt: skip


def make_trainer(flags: list[str], stage1: bool, ctx: distributed.DistContext) -> Trainer:
    """A Trainer for this rank from CLI flags (the same path as ``flow2gan.bin.pretrain/finetune``)."""
    args = (pretrain_parser() if stage1 else finetune_parser()).parse_args(flags)
    opts = common_options(args)
    opts.exp_dir.mkdir(parents=True, exist_ok=True)
    if stage1:
        fm = flow_matching_options(args)
        return Trainer(opts, ctx, lambda fresh: FlowMatchingStage(opts, fm))
    gan = gan_options(args)
    return Trainer(opts, ctx, lambda fresh: GANStage(opts, gan, initialise_generator=fresh))


def train_worker(
    rank: int, world_size: int, args: argparse.Namespace, items: list[HeldOut], port: int
) -> None:
    """Both stages on one rank (``distributed.launch``); rank 0 evaluates and keeps ``results.json``."""
    torch.set_num_threads(args.threads)
    if world_size > 1:  # a spawned process (the single-process run keeps main's setting)
        torch.set_num_interop_threads(1)
    ctx = distributed.setup(rank, world_size, port, "cpu")
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    rec = Recorder.load(args.out, items, args.threads * world_size) if ctx.is_main else None
    eval_every = (args.eval_every or max(args.minutes / 8, 0.5)) * 60
    pitch_every_point = args.pitch == 2
    budget1 = args.minutes * args.stage1_share * 60
    budget2 = args.minutes * 60 - budget1
    config = get_generator_config(args.model_name)
    paths = run_paths(args)
    averaged1 = make_generator(config, args.codec)
    stage1_s = budget1  # training seconds of stage 1 (a given --stage1-checkpoint counts as its share)
    if args.stage1_checkpoint is None:
        trainer1 = make_trainer(stage1_flags(args, paths), stage1=True, ctx=ctx)
        gen1 = trainer1.stage.generator
        run1 = BudgetRun(trainer1, budget1, eval_every, args.avg_fraction)

        def eval_stage1(seconds: float) -> None:
            for n in (1, 2, 4):
                rec.point(seconds / 60, f"stage1-{n}step", gen1, n, pitch=pitch_every_point)

        run1.run("stage 1 (flow matching)", eval_stage1)
        stage1_s = run1.trained_s
        if ctx.is_main:
            averaged1.load_state_dict(run1.averaged_state())
    else:
        load_checkpoint(args.stage1_checkpoint, averaged1)
    if ctx.is_main:
        export_generator(averaged1, None, paths.stage1_ckpt)
        for n in (1, 2, 4):
            rec.point(stage1_s / 60, f"stage1-{n}step", averaged1, n, pitch=True)
        rec.results["final_checkpoint"] = str(paths.stage1_ckpt)
        rec.save()
    distributed.barrier(ctx)
    if budget2 > 0:
        trainer2 = make_trainer(stage2_flags(args, paths), stage1=False, ctx=ctx)
        system2 = f"stage2-{args.n_timesteps}step"
        run2 = BudgetRun(trainer2, budget2, eval_every, args.avg_fraction)

        def eval_stage2(seconds: float) -> None:
            gen2 = trainer2.stage.generator
            rec.point((stage1_s + seconds) / 60, system2, gen2, args.n_timesteps, pitch=pitch_every_point)

        run2.run("stage 2 (fine-tuning)", eval_stage2)
        if ctx.is_main:
            prefix = "generator."
            state = {k[len(prefix) :]: v for k, v in run2.averaged_state().items() if k.startswith(prefix)}
            final_gen = make_generator(config, args.codec)
            final_gen.load_state_dict(state)
            final_ckpt = args.out / "stage2-averaged.pt"
            export_generator(final_gen, args.n_timesteps, final_ckpt)
            rec.point((stage1_s + run2.trained_s) / 60, system2, final_gen, args.n_timesteps, pitch=True)
            rec.results["final_checkpoint"] = str(final_ckpt)
            rec.save()
    distributed.cleanup(ctx)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads * args.processes)
    torch.set_num_interop_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        handlers=[logging.FileHandler(args.out / "log.txt"), logging.StreamHandler(sys.stderr)],
        force=True,
    )
    logging.getLogger("flow2gan").setLevel(logging.WARNING)
    logger.info(
        "%d training process(es) x %d torch thread(s), batch %d per process; options %s",
        args.processes, args.threads, args.batch_size // args.processes, vars(args),
    )  # fmt: skip

    config = get_generator_config(args.model_name)
    mel = mel_frontend(config)
    torch.manual_seed(0)
    untrained = make_generator(config, args.codec)
    codec = load_tokenizer(args.codec) if args.codec else None
    cond_fn = audio_front_end(untrained, codec, args.bandwidth if codec else None)
    heldout = [load_heldout(d, cond_fn, config.sampling_rate, args) for d in args.heldout_dir]
    logger.info("baselines on %s (%d files)", args.heldout_dir[0], len(heldout[0]))

    def baselines(items: list[HeldOut]) -> dict[str, dict[str, float]]:
        if codec is not None:
            return {"encodec": eval_codec(items, codec)}
        return {
            "griffin_lim": eval_classical(items, mel, GL_ITERS),
            "random_phase": eval_classical(items, mel, 0),
        }

    rec = Recorder(args.out, heldout[0])
    rec.results["baselines"] = {
        **baselines(heldout[0]),
        "untrained": eval_generator(untrained, heldout[0], 1),
    }
    for name, m in rec.results["baselines"].items():
        logger.info("baseline %-12s %s", name, fmt(m))
    rec.save()
    write_manifests(args, run_paths(args))
    distributed.launch(train_worker, args.processes, args, heldout[0], distributed.free_port())

    rec = Recorder.load(args.out, heldout[0])
    final_gen = make_generator(config, args.codec)
    # the stage-2 file records its step count; a stage-1 model is scored with 2 steps
    final_steps = load_checkpoint(Path(rec.results["final_checkpoint"]), final_gen).get("n_timesteps", 2)
    rec.results["heldout_other"] = {
        str(d): {"final": eval_generator(final_gen, items, final_steps), **baselines(items)}
        for d, items in zip(args.heldout_dir[1:], heldout[1:], strict=True)
    }
    if codec is not None:
        rec.results["per_bandwidth"] = {}
        for bandwidth in config.bandwidths:
            items = at_bandwidth(heldout[0], codec, bandwidth)
            final, baseline = eval_generator(final_gen, items, final_steps), eval_codec(items, codec)
            rec.results["per_bandwidth"][str(bandwidth)] = {"final": final, "encodec": baseline}
            logger.info("%5.1f kbps: final %s | encodec %s", bandwidth, fmt(final), fmt(baseline))
    rec.results["settings"] = {k: str(v) for k, v in vars(args).items()}
    rec.save()
    title = (
        f"{args.model_name}, {args.minutes:g} training min, {args.processes} process(es) x "
        f"{args.threads} thread(s), held-out {args.heldout_dir[0].name}"
    )
    plot_curve(rec.results, args.out / "curve.png", title)
    table = summary_table(rec.results)
    (args.out / "summary.md").write_text(table + "\n")
    print(table)
    for bandwidth, m in rec.results.get("per_bandwidth", {}).items():
        print(f"\n{bandwidth} kbps: " + "; ".join(f"{name}: {fmt(v)}" for name, v in m.items()))
    for d, m in rec.results["heldout_other"].items():
        print(f"\n{d}: " + "; ".join(f"{name}: {fmt(v)}" for name, v in m.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
