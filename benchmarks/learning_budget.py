"""The learning benchmark's clock: a Trainer driven epoch by epoch until a training-time budget is spent,
with evaluations at fixed intervals and the model averaged over the last part of the budget."""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from flow2gan.training import distributed
from flow2gan.training.averaging import average_checkpoints_with_averaged_model
from flow2gan.training.data import set_loader_epoch
from flow2gan.training.loop import Trainer, fix_random_seed


class BudgetRun:
    """Drives a Trainer epoch by epoch until a training-time budget is spent, calling back to evaluate.

    Under DDP every rank runs it; rank 0's clock decides for all (it is broadcast after each epoch), only
    rank 0 evaluates and averages, and the other ranks wait for it at a barrier.
    """

    def __init__(self, trainer: Trainer, budget_s: float, eval_every_s: float, avg_fraction: float) -> None:
        self.trainer = trainer
        self.budget_s = budget_s
        self.eval_every_s = eval_every_s
        self.avg_start_s = budget_s * (1.0 - avg_fraction)
        self.avg_start: tuple[int, dict] | None = None
        self.trained_s = 0.0

    def run(self, name: str, on_eval) -> None:  # noqa: ANN001 - callback(trained_seconds)
        """Train until the budget is spent; ``on_eval(seconds)`` at every interval (not at the end)."""
        t = self.trainer
        main = t.ctx.is_main
        t.build_data()
        next_eval = self.eval_every_s
        epoch = 0
        bar = tqdm(total=round(self.budget_s), desc=name, unit="s", position=0, disable=not main)
        while self.trained_s < self.budget_s:
            epoch += 1
            fix_random_seed(t.opts.seed + epoch - 1)
            set_loader_epoch(t.train_data.loaders, epoch)
            t.stage.module.train()
            start = time.perf_counter()
            t.train_one_epoch(epoch)
            spent = torch.tensor([time.perf_counter() - start if main else 0.0], dtype=torch.float64)
            self.trained_s += float(distributed.all_reduce_sum(spent, t.ctx)[0])
            bar.update(round(min(self.trained_s, self.budget_s)) - bar.n)
            bar.set_postfix(batches=t.batch_idx_train + 1)
            if main and self.avg_start is None and self.trained_s >= self.avg_start_s:
                self.avg_start = (t.batch_idx_train, state_copy(t.model_avg))
            if next_eval <= self.trained_s < self.budget_s:
                if main:
                    on_eval(self.trained_s)
                distributed.barrier(t.ctx)
                while next_eval <= self.trained_s:
                    next_eval += self.eval_every_s
        bar.close()
        t.save(epoch)

    def averaged_state(self) -> dict:
        """The model averaged over the batches since the averaging window started (rank 0 only)."""
        t = self.trainer
        if self.avg_start is None:  # no training at all (a zero budget): the initial weights
            return state_copy(t.stage.module)
        period = t.opts.average_period
        b_start, start = self.avg_start
        b_start -= b_start % period
        b_end = t.batch_idx_train - t.batch_idx_train % period
        if b_end <= b_start:  # too short to average: the live weights
            return state_copy(t.stage.module)
        end = t.model_avg.state_dict()
        avg = end if b_start <= 0 else average_checkpoints_with_averaged_model(start, end, b_start, b_end)
        return {k: v.float() if v.is_floating_point() else v for k, v in avg.items()}


def state_copy(module: torch.nn.Module) -> dict:
    """A detached copy of a module's state dict."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
