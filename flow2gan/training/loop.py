"""The training loop shared by both stages (SPEC section 5.8).

A ``Stage`` computes a batch's losses and names the optimizer they belong to; this loop owns everything
else, in one visible place: backward, gradient scaling, the optimizer and LR-schedule steps, model
averaging, logging, validation and checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.amp import GradScaler
from torch.nn.parallel import DistributedDataParallel

from flow2gan.runtime import set_training_threads, tune_malloc
from flow2gan.training import distributed
from flow2gan.training.averaging import make_averaged_copy, update_averaged_model
from flow2gan.training.data import make_test_batch, make_train_loaders, make_valid_loaders, set_loader_epoch
from flow2gan.training.experiment import (
    ResumePoint,
    epoch_path,
    mid_epoch_path,
    prune_checkpoints,
    read_resume_checkpoint,
    restore_training_state,
    resume_points,
    save_training_checkpoint,
    set_aside,
)
from flow2gan.training.guards import GradScaleNurse, check_finite, save_bad_model_on_failure
from flow2gan.training.monitor import (
    Diagnostics,
    MetricTotals,
    add_inf_check_hooks,
    format_metrics,
    log_test_samples,
)
from flow2gan.training.options import TrainOptions
from flow2gan.training.progress import TrainingProgress
from flow2gan.training.seeding import fix_random_seed, restore_rng_state, rng_state
from flow2gan.training.stages import Stage, StageLosses, autocast_context, build_condition

logger = logging.getLogger(__name__)

StageFactory = Callable[[bool], Stage]  # argument: whether this is a fresh start (start epoch 1)
DIAGNOSTIC_BATCHES = 5


def setup_logging(exp_dir: Path, rank: int, world_size: int) -> None:
    """Log to ``exp_dir/log/log-train-<time>[-rank]`` and to stderr (rank 0 at INFO, others WARNING)."""
    log_dir = exp_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{rank}" if world_size > 1 else ""
    handlers: list[logging.Handler] = [
        logging.FileHandler(log_dir / f"log-train-{time.strftime('%Y-%m-%d-%H-%M-%S')}{suffix}")
    ]
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
        handlers=handlers,
        force=True,
    )


class Trainer:
    """State of one training run on one rank; ``run`` executes every epoch."""

    def __init__(self, opts: TrainOptions, ctx: distributed.DistContext, make_stage: StageFactory) -> None:
        self.opts = opts
        self.ctx = ctx
        fix_random_seed(opts.seed)
        candidates = resume_points(opts.exp_dir, opts.resume, opts.start_epoch)
        self.stage = make_stage(not candidates)
        self.model_avg = make_averaged_copy(self.stage.module) if ctx.is_main else None
        self.batch_idx_train = -1
        self.scaler_state = None
        self.mid_epoch_state: dict | None = None
        self.start_epoch = self.resume(candidates).epoch
        self.stage.module.to(ctx.device)
        self.model: nn.Module = self.stage.module
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.model = DistributedDataParallel(
                self.stage.module, device_ids=ids, find_unused_parameters=True
            )
        self.mel = build_condition(self.stage.generator, opts.codec).to(ctx.device)
        self.scaler = GradScaler(ctx.device.type, enabled=opts.use_fp16, init_scale=1.0)
        if self.scaler_state:
            self.scaler.load_state_dict(self.scaler_state)
        self.diagnostics = Diagnostics(self.stage.module) if opts.print_diagnostics else None
        if opts.inf_check:
            add_inf_check_hooks(self.stage.module)
        self.scale_nurse = None
        if opts.use_fp16:
            first_warning = opts.exp_dir / f"bad-model-first-warning-{ctx.rank}.pt"
            self.scale_nurse = GradScaleNurse(self.scaler, self.stage.module, first_warning)
        self.writer = None
        if ctx.is_main and opts.tensorboard and not opts.print_diagnostics:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(opts.exp_dir / "tensorboard"))

        self.progress = TrainingProgress(self.start_epoch, opts.num_epochs, enabled=ctx.is_main)

    def resume(self, candidates: list[ResumePoint]) -> ResumePoint:
        """Load the first readable candidate.

        ``--resume auto`` skips unreadable files with a warning; once a file loads, rank 0 renames the
        skipped ones (:func:`set_aside`) so that the resumed run neither writes over nor prunes them.
        When none loads, nothing is renamed.
        """
        gan = self.stage.module is not self.stage.generator  # stage 2 trains the GAN wrapper
        skipped = []
        for point in candidates:
            try:
                ckpt = read_resume_checkpoint(point, gan)
            except Exception as exc:  # truncated, foreign or exported files fail in many ways
                if self.opts.resume != "auto":
                    raise
                logger.warning("skipping unreadable checkpoint %s: %s", point.path, exc)
                skipped.append(point.path)
                continue
            for path in skipped if self.ctx.is_main else ():
                logger.warning("kept the skipped %s as %s", path.name, set_aside(path))
            restore_training_state(ckpt, point.path, self.stage.module, self.model_avg, self.stage.states())
            self.batch_idx_train = int(ckpt["batch_idx_train"])
            self.scaler_state = ckpt.get("grad_scaler")
            if point.batches_done:
                self.mid_epoch_state = ckpt["mid_epoch"]
                self.stage.resume_mid_epoch(ckpt)
                if self.model_avg is not None:  # continue averaging in the dtype it had when saved
                    self.model_avg.to(getattr(torch, self.mid_epoch_state["model_avg_dtype"]))
            return point
        if candidates:
            raise RuntimeError(f"no readable checkpoint in {self.opts.exp_dir}")
        return ResumePoint(None, 1)

    def build_data(self) -> None:
        """Training mixer, validation loaders and the TensorBoard test batch."""
        opts, ctx = self.opts, self.ctx
        sr = self.stage.generator.config.sampling_rate
        self.train_data = make_train_loaders(
            opts.train_recordings,
            opts.train_dls_weights,
            sr,
            opts.batch_size,
            opts.train_num_workers,
            duration=opts.duration,
            max_load_times=opts.max_load_times,
            world_size=ctx.world_size,
            rank=ctx.rank,
            shar_dirs=opts.train_shar,
        )
        self.valid_loaders = make_valid_loaders(
            opts.valid_recordings,
            sr,
            opts.batch_size,
            opts.valid_num_workers,
            duration=opts.duration,
            world_size=ctx.world_size,
            rank=ctx.rank,
        )
        self.test_batch = None
        if self.writer is not None and opts.test_recordings:
            self.test_batch = make_test_batch(
                opts.test_recordings, sr, drop_silent=self.stage.test_drop_silent
            )

    def run(self) -> None:
        """All epochs from the start epoch; checkpoints at epoch ends."""
        self.build_data()
        for epoch in range(self.start_epoch, self.opts.num_epochs + 1):
            fix_random_seed(self.opts.seed + epoch - 1)
            set_loader_epoch(self.train_data.loaders, epoch)
            if self.writer is not None:
                self.writer.add_scalar("train/epoch", epoch, self.batch_idx_train)
            if not self.train_one_epoch(epoch):
                logger.info("diagnostics:\n%s", self.diagnostics.report())
                return
            if self.diagnostics is None and (
                epoch % self.opts.save_every_n == 0 or epoch == self.opts.num_epochs
            ):
                self.save(epoch)
        self.progress.close()
        if self.writer is not None:
            self.writer.close()

    def train_one_epoch(self, epoch: int) -> bool:
        """One pass over the mixed training loaders; False when diagnostics stopped it early.

        ``RuntimeError`` when every batch of the epoch was empty (no recording could be read), rather
        than saving a checkpoint trained on nothing.
        """
        totals: dict[str, MetricTotals] = {}
        batches = iter(self.train_data)
        skipped, first_b = self.fast_forward(batches) if self.mid_epoch_state else (0, self.batch_idx_train)
        total = self.train_data.expected_batches()
        empty = 0
        for done, (loader_index, (audio, lens, names)) in enumerate(
            self.progress.epoch(epoch, batches, total, skipped), start=skipped + 1
        ):
            if audio.shape[0] == 0:
                empty += 1
                continue
            self.batch_idx_train += 1
            b = self.batch_idx_train
            audio, lens = audio.to(self.ctx.device), lens.to(self.ctx.device)
            with save_bad_model_on_failure(self.save_bad_model, f"batch {b} (epoch {epoch}) on {names}"):
                out = self.train_step(audio, lens, b)
            key = f"{out.optimizer}_{loader_index}" if out.optimizer else str(loader_index)
            totals.setdefault(key, MetricTotals()).add(out.metrics, audio.shape[0])
            if self.diagnostics is not None and self.diagnostics.batches(1) == DIAGNOSTIC_BATCHES:
                return False
            if self.model_avg is not None and b > 0 and b % self.opts.average_period == 0:
                update_averaged_model(self.model_avg, self.stage.module, b, self.opts.average_period)
            if self.scale_nurse is not None:
                self.scale_nurse.check(b - first_b)
            if self.log_due(b):
                self.log_train(epoch, b, key, out.metrics, totals[key])
            if b % self.opts.valid_interval == 0:
                self.validate(b)
            if self.opts.save_every_n_batches and (b + 1) % self.opts.save_every_n_batches == 0:
                self.save_mid_epoch(epoch, done, first_b)
        if empty and not totals:
            raise RuntimeError(
                f"epoch {epoch}: all {empty} batches were empty: no training recording could be read "
                "(see the warnings above)"
            )
        return True

    def fast_forward(self, batches: Iterator) -> tuple[int, int]:
        """Mid-epoch resume: replay the data position, then restore this rank's RNG states.

        The batches already trained are loaded again and dropped, so that the sampler order, the loader
        draws and the data workers' RNGs advance exactly as in the interrupted run (the epoch's seeds are
        the same); returns (batches done in the epoch, ``batch_idx_train`` before the epoch).
        """
        state, self.mid_epoch_state = self.mid_epoch_state, None
        for _ in range(state["batches_done"]):
            next(batches)
        restore_rng_state(state["rng"][self.ctx.rank])
        logger.info("resumed epoch at batch %d of the epoch", state["batches_done"])
        return state["batches_done"], state["epoch_start_batch_idx"]

    def log_due(self, b: int) -> bool:
        """Every ``--log-interval`` batches (both batches of a D/G pair in stage 2)."""
        phase = b % self.opts.log_interval
        return phase == 0 or (self.stage.paired_steps and phase == 1)

    def train_step(self, audio: Tensor, lens: Tensor, batch_idx_train: int) -> StageLosses:
        """One training batch: condition and losses under autocast, then :func:`update`."""
        with autocast_context(self.ctx.device, self.opts.dtype):
            out = self.stage.losses(self.model, self.mel(audio), audio, lens, batch_idx_train)
        update(self.stage, self.scaler, out, batch_idx_train)
        return out

    def log_train(self, epoch: int, b: int, key: str, current: dict, totals: MetricTotals) -> None:
        """Text log and TensorBoard scalars (current batch, epoch totals, learning rates, grad scale)."""
        current = {name: float(v) for name, v in current.items()}
        lrs = self.stage.learning_rates()
        logger.info(
            "epoch %d, batch %d, %s: current %s; epoch total %s; lr %s",
            epoch,
            b,
            key,
            format_metrics(current),
            format_metrics(totals.means()),
            ", ".join(f"{v:.3g}" for v in lrs.values()),
        )
        if self.writer is None:
            return
        dl = key.split("_")[-1]
        for name, value in current.items():
            self.writer.add_scalar(f"train/current_{dl}_{name}", value, b)
        for name, value in totals.means().items():
            self.writer.add_scalar(f"train/tot_{key}_{name}", value, b)
        for suffix, lr in lrs.items():
            self.writer.add_scalar(f"train/learning_rate{suffix}", lr, b)
        if self.opts.use_fp16:
            self.writer.add_scalar("train/grad_scale", self.scaler.get_scale(), b)

    @torch.no_grad()
    def validate(self, b: int) -> None:
        """Losses on every validation set (summed over ranks), and TensorBoard test samples on rank 0."""
        self.stage.module.eval()
        for index, loader in enumerate(self.valid_loaders):
            totals = MetricTotals()
            for audio, lens, _ in loader:
                if audio.shape[0] == 0:
                    continue
                audio, lens = audio.to(self.ctx.device), lens.to(self.ctx.device)
                with autocast_context(self.ctx.device, self.opts.dtype):
                    metrics = self.stage.valid_losses(self.model, self.mel(audio), audio, lens)
                totals.add(metrics, audio.shape[0])
            names = sorted(totals.sums)
            summed = distributed.all_reduce_sum(totals.as_tensor(names, self.ctx.device), self.ctx)
            means = {n: (summed[0, i] / summed[1, i].clamp(min=1)).item() for i, n in enumerate(names)}
            logger.info("validation %d at batch %d: %s", index, b, format_metrics(means))
            if self.writer is not None:
                for name, value in means.items():
                    self.writer.add_scalar(f"train/valid_{index}_{name}", value, b)
        if self.test_batch is not None:
            audio, lens, _ = self.test_batch
            audio, lens = audio.to(self.ctx.device), lens.to(self.ctx.device)
            samples = self.stage.synthesize(self.mel(audio), lens)
            log_test_samples(self.writer, samples, audio, lens, self.stage.generator.config.sampling_rate, b)

    def checkpoint_params(self, epoch: int) -> dict:
        """Top-level checkpoint values: progress, options, and the stage's own."""
        return {
            **self.opts.to_checkpoint_dict(),
            **self.stage.checkpoint_params(),
            "batch_idx_train": self.batch_idx_train,
            "cur_epoch": epoch,
            "sampling_rate": self.stage.generator.config.sampling_rate,
            "generator_config": self.stage.generator.config.to_dict(),
        }

    def save(self, epoch: int) -> None:
        """``epoch-{epoch}.pt`` from rank 0, keeping the newest ``--keep-last-k`` epoch files."""
        if not self.ctx.is_main:
            return
        states = {**self.stage.states(), "grad_scaler": self.scaler}
        save_training_checkpoint(
            epoch_path(self.opts.exp_dir, epoch),
            self.stage.module,
            self.model_avg,
            states,
            self.checkpoint_params(epoch),
        )
        prune_checkpoints(self.opts.exp_dir, self.opts.keep_last_k)

    def save_mid_epoch(self, epoch: int, batches_done: int, epoch_start_batch_idx: int) -> None:
        """``epoch-{epoch}-batch-{batches_done}.pt`` with everything an exact resume needs.

        Beyond an epoch checkpoint: every rank's RNG states (gathered to rank 0), the data position
        (batches done in the epoch) and the stage's running state (the D/G phase).
        """
        rng = distributed.all_gather_object(rng_state(), self.ctx)
        if not self.ctx.is_main:
            return
        params = {
            **self.checkpoint_params(epoch),
            "mid_epoch": {
                "batches_done": batches_done,
                "epoch_start_batch_idx": epoch_start_batch_idx,
                "rng": rng,
                "model_avg_dtype": str(next(self.model_avg.parameters()).dtype).removeprefix("torch."),
            },
        }
        states = {**self.stage.states(), "grad_scaler": self.scaler}
        path = mid_epoch_path(self.opts.exp_dir, epoch, batches_done)
        module, avg = self.stage.module, self.model_avg
        save_training_checkpoint(path, module, avg, states, params, avg_to_float32=False)
        prune_checkpoints(self.opts.exp_dir, self.opts.keep_last_k)

    def save_bad_model(self) -> None:
        """``bad-model-{rank}.pt`` after a failed batch (model average only on rank 0)."""
        path = self.opts.exp_dir / f"bad-model-{self.ctx.rank}.pt"
        states = {**self.stage.states(), "grad_scaler": self.scaler}
        save_training_checkpoint(path, self.stage.module, self.model_avg, states, self.checkpoint_params(-1))
        logger.error("saved %s", path)


def update(stage: Stage, scaler: GradScaler, out: StageLosses, batch_idx_train: int) -> None:
    """Backward of the scaled loss and one update of the optimizer the loss belongs to (with its LR).

    Raises ``NonFiniteLossError`` for a NaN/inf loss before any gradient is computed.
    """
    check_finite(out.loss, f"{out.optimizer} loss".lstrip())
    slot = stage.optimizers[out.optimizer]
    slot.optimizer.zero_grad()
    scaler.scale(out.loss).backward()
    slot.before_update(batch_idx_train)
    scaler.step(slot.optimizer)
    scaler.update()
    slot.after_update()


def train_worker(rank: int, world_size: int, opts: TrainOptions, make_stage: StageFactory) -> None:
    """Entry of one training process (spawned, torchrun or in-process)."""
    opts = dataclasses.replace(opts, world_size=world_size)  # torchrun ignores --world-size
    opts.exp_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(opts.exp_dir, rank, world_size)
    tune_malloc()
    ctx = distributed.setup(rank, world_size, opts.master_port, opts.device)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    threads = set_training_threads(local)
    logger.info(
        "rank %d/%d on %s, %d torch threads; options: %s", rank, world_size, ctx.device, threads, opts
    )
    try:
        Trainer(opts, ctx, make_stage).run()
    finally:
        distributed.cleanup(ctx)


def train(opts: TrainOptions, make_stage: StageFactory) -> None:
    """Run training with ``opts.world_size`` processes (or under torchrun)."""
    distributed.launch(train_worker, opts.world_size, opts, make_stage)
