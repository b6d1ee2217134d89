"""What keeps a run safe: non-finite loss checks, fp16 grad-scale nursing and bad-model files."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.amp import GradScaler

from flow2gan.training.monitor import add_inf_check_hooks
from flow2gan.weights import save_atomic

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or inf; the loop saves ``bad-model-*.pt`` first."""


def check_finite(loss: Tensor, what: str) -> None:
    """Raise ``NonFiniteLossError`` for a NaN/inf loss."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{what} is {loss.item()}")


class GradScaleNurse:
    """fp16 training: keep the gradient scale of a ``GradScaler`` from collapsing (reference behaviour).

    Every 25 / 100 / 400 batches a scale below 2 / 8 / 32 is doubled; below 0.01 the first time, a
    warning is logged, ``bad_model_path`` gets the model and inf-check hooks are added; below 1e-5 the
    run stops with ``RuntimeError`` (training diverged).
    """

    def __init__(self, scaler: GradScaler, module: nn.Module, bad_model_path: Path) -> None:
        self.scaler = scaler
        self.module = module
        self.bad_model_path = bad_model_path
        self.warned = False

    def check(self, batch_idx: int) -> None:
        """Apply the rules after the update of the epoch's ``batch_idx``-th (1-based) batch."""
        scale = self.scaler.get_scale()
        for period, limit in ((25, 2.0), (100, 8.0), (400, 32.0)):
            if batch_idx % period == 0 and scale < limit:
                self.scaler.update(scale * 2.0)
                scale *= 2.0
        if scale < 0.01 and not self.warned:
            self.warned = True
            logger.warning("grad scale is small: %g", scale)
            save_atomic({"model": self.module.state_dict()}, self.bad_model_path)
            add_inf_check_hooks(self.module)
        if scale < 1e-5:
            raise RuntimeError(f"grad scale is too small ({scale}), exiting: training diverged")


@contextlib.contextmanager
def save_bad_model_on_failure(save: Callable[[], None], where: str) -> Iterator[None]:
    """Log ``training failed at <where>``, call ``save`` (the bad-model file) and re-raise on any error."""
    try:
        yield
    except Exception:
        logger.error("training failed at %s", where)
        save()
        raise
