"""ScaledAdam optimizer and Eden2 learning-rate schedule (SPEC §5.1-5.2).

ScaledAdam stacks parameters of identical (dtype, shape) along a new leading dimension and
processes the stacks in ascending ``(str(dtype), *shape)`` order; the maths is per parameter,
stacking only fixes the summation order of the global gradient norm used for clipping.
State is stored per parameter (slices of the stacks), so ``state_dict()`` round-trips.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Eden2", "ScaledAdam"]

logger = logging.getLogger(__name__)

# Early clipping-threshold updates (in addition to every multiple of the update period); at
# these steps only the last ``step`` norms are used and the threshold is doubled once more.
_WARMUP_THRESHOLD_STEPS = (10, 20, 40)
# Bias correction of the second moment is applied only while 1 - beta2**(step+1) is below this.
_BIAS_CORRECTION_LIMIT = 0.99
# Absolute limit on the relative size change of a tensor per size update.
_MAX_SCALE_STEP = 0.1
# Per-parameter state keys that are stacked along dim 0 for the batched update.
_COMMON_KEYS = ("exp_avg_sq", "delta")
_NONSCALAR_KEYS = ("param_rms", "scale_exp_avg_sq", "scale_grads")


@dataclass
class _Batch:
    """Stacked view of all parameters of one (dtype, shape) bucket: p/grad are (n, *shape)."""

    params: list[Tensor]
    p: Tensor
    grad: Tensor
    state: dict[str, Tensor]
    step: int
    is_scalar: bool


def _normalize_param_groups(params: Iterable[Any]) -> list[Any]:
    """Turn ``[{"named_params": [...]}]`` groups or a ``named_parameters()`` iterator into torch groups."""
    items = list(params)
    if not items:
        raise ValueError("ScaledAdam got an empty parameter list")
    if not isinstance(items[0], dict):
        return [{"params": items}]
    groups = []
    for group in items:
        group = dict(group)
        if "named_params" in group:
            if "params" in group:
                raise ValueError("a param group may give 'params' or 'named_params', not both")
            group["params"] = list(group.pop("named_params"))
        groups.append(group)
    return groups


def _rms(p: Tensor) -> Tensor:
    """Per-stacked-parameter RMS: (n, *shape) -> (n, 1, ..., 1)."""
    return (p**2).mean(dim=list(range(1, p.ndim)), keepdim=True).sqrt()


class ScaledAdam(torch.optim.Optimizer):
    """Adam with RMS-proportional updates, learned tensor scale and adaptive 2x-median gradient clipping.

    ``params`` is either a list of group dicts with ``"named_params": list(model.named_parameters())``
    (optionally ``"lr"``), a ``model.named_parameters()`` iterator, or plain tensors / torch groups.
    Gradients that are ``None`` are treated as zeros: every parameter is updated at every step.
    ``last_clip_factors`` holds the clipping factor each group got in the latest step (1.0 = none).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        clipping_scale: float | None = 2.0,
        betas: tuple[float, float] = (0.9, 0.98),
        scalar_lr_scale: float = 0.1,
        eps: float = 1.0e-8,
        param_min_rms: float = 1.0e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
        clipping_update_period: int = 100,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        if clipping_scale is not None and clipping_scale <= 0.0:
            raise ValueError(f"invalid clipping_scale {clipping_scale}")
        defaults = dict(
            lr=lr,
            clipping_scale=clipping_scale,
            betas=betas,
            scalar_lr_scale=scalar_lr_scale,
            eps=eps,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=size_update_period,
            clipping_update_period=clipping_update_period,
        )
        super().__init__(_normalize_param_groups(params), defaults)
        self.last_clip_factors: list[float] = [1.0] * len(self.param_groups)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update of every parameter (``None`` gradients count as zeros)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.last_clip_factors = [1.0] * len(self.param_groups)
        for index, group in enumerate(self.param_groups):
            batches = self._make_batches(group)
            if not batches:
                continue
            factor = self._clipping_factor(group, batches)
            self.last_clip_factors[index] = factor
            for batch in batches:
                if factor == 0.0:
                    batch.grad.zero_()
                elif factor < 1.0:
                    batch.grad.mul_(factor)
                self._update_batch(group, batch)
                self._write_back(batch)
        return loss

    def _make_batches(self, group: dict[str, Any]) -> list[_Batch]:
        """Stack the group's parameters, gradients and state per (dtype, shape) bucket, in sorted order."""
        buckets: dict[tuple, list[Tensor]] = defaultdict(list)
        for p in group["params"]:
            buckets[(str(p.dtype), *p.shape)].append(p)
        batches = []
        for key in sorted(buckets):
            params = buckets[key]
            grads = []
            for p in params:
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError("ScaledAdam does not support sparse gradients")
                grads.append(torch.zeros_like(p) if p.grad is None else p.grad)
            stacked_p = torch.stack([p.detach() for p in params])
            stacked_grad = torch.stack(grads).to(stacked_p.dtype)
            is_scalar = stacked_p.numel() == stacked_p.shape[0]
            first_state = self.state[params[0]]
            if "step" in first_state:
                keys = _COMMON_KEYS + (() if is_scalar else _NONSCALAR_KEYS)
                state = {k: torch.stack([self.state[p][k] for p in params]) for k in keys}
                step = first_state["step"]
            else:
                state = self._init_state(group, stacked_p, is_scalar)
                step = 0
            batches.append(_Batch(params, stacked_p, stacked_grad, state, step, is_scalar))
        return batches

    @staticmethod
    def _init_state(group: dict[str, Any], p: Tensor, is_scalar: bool) -> dict[str, Tensor]:
        """Fresh stacked state for a bucket: Adam moments, and for non-scalars RMS and size statistics."""
        state = {"exp_avg_sq": torch.zeros_like(p), "delta": torch.zeros_like(p)}
        if not is_scalar:
            param_rms = _rms(p)
            state["param_rms"] = param_rms
            state["scale_exp_avg_sq"] = torch.zeros_like(param_rms)
            slots_shape = (p.shape[0], group["size_update_period"], *param_rms.shape[1:])
            state["scale_grads"] = torch.zeros(slots_shape, dtype=p.dtype, device=p.device)
        return state

    def _write_back(self, batch: _Batch) -> None:
        """Copy updated stacked values into the parameters and store per-parameter state slices."""
        for i, p in enumerate(batch.params):
            p.copy_(batch.p[i])
            param_state = self.state[p]
            param_state["step"] = batch.step + 1
            for key, value in batch.state.items():
                param_state[key] = value[i]

    def _clipping_factor(self, group: dict[str, Any], batches: list[_Batch]) -> float:
        """Global-norm clipping factor in [0, 1] for this group; stats live in the first param's state."""
        clipping_scale = group["clipping_scale"]
        if clipping_scale is None:
            return 1.0
        period = group["clipping_update_period"]
        first = batches[0]
        clip_state = self.state[first.params[0]]
        if "model_norms" not in clip_state:
            clip_state["model_norms"] = torch.zeros(period, dtype=first.p.dtype, device=first.p.device)
            clip_state["model_norm_threshold"] = torch.full(
                (), math.nan, dtype=first.p.dtype, device=first.p.device
            )
            clip_state["num_clipped"] = 0
        step = first.step
        if step == 0:
            return 1.0
        scalar_weight = group["scalar_lr_scale"] ** 2
        sq_sum = None
        for batch in batches:
            if batch.is_scalar:
                term = (batch.grad**2).sum() * scalar_weight
            else:
                term = ((batch.grad * batch.state["param_rms"]) ** 2).sum()
            sq_sum = term if sq_sum is None else sq_sum + term
        tot_norm = sq_sum.sqrt()
        clip_state["model_norms"][step % period] = tot_norm
        if step % period == 0 or step in _WARMUP_THRESHOLD_STEPS:
            self._update_threshold(clip_state, step, clipping_scale, period)
        threshold = clip_state["model_norm_threshold"]
        if math.isnan(threshold.item()):
            return 1.0
        factor = (threshold / (tot_norm + 1.0e-20)).item()
        if math.isnan(factor):
            factor = 0.0
        factor = min(factor, 1.0)
        if factor < 1.0:
            clip_state["num_clipped"] += 1
            logger.debug(
                "Clipping_scale=%s: grad-norm %.3e > threshold %.3e, scaling gradients by %.4g",
                clipping_scale,
                tot_norm.item(),
                threshold.item(),
                factor,
            )
        return factor

    @staticmethod
    def _update_threshold(clip_state: dict[str, Any], step: int, clipping_scale: float, period: int) -> None:
        """Set the threshold to clipping_scale x median of the recent norms (x2 again at warm-up steps)."""
        sorted_norms = clip_state["model_norms"].sort()[0]
        warmup = step in _WARMUP_THRESHOLD_STEPS
        if warmup:
            sorted_norms = sorted_norms[-step:]
        n = sorted_norms.numel()
        median = sorted_norms[(n // 4) * 2]
        if math.isnan(median.item()):
            raise RuntimeError(f"ScaledAdam: NaN median gradient norm at step {step}")
        threshold = clipping_scale * median
        if warmup:
            threshold = threshold * 2.0
        clip_state["model_norm_threshold"] = threshold
        quartiles = [sorted_norms[(n - 1) * q // 4].item() for q in range(5)]
        interval = step if warmup else period
        logger.info(
            "Clipping_scale=%s, grad-norm quartiles %s, threshold=%.3e, percent-clipped=%.1f",
            clipping_scale,
            " ".join(f"{q:.3e}" for q in quartiles),
            threshold.item(),
            100.0 * clip_state["num_clipped"] / interval,
        )
        clip_state["num_clipped"] = 0

    @staticmethod
    def _update_batch(group: dict[str, Any], batch: _Batch) -> None:
        """Adam step scaled by parameter RMS, periodic size update, momentum, scalar clamp (in place)."""
        lr = group["lr"]
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        period = group["size_update_period"]
        p, grad, state, step = batch.p, batch.grad, batch.state, batch.step

        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias_correction2 = 1.0 - beta2 ** (step + 1)
        if bias_correction2 < _BIAS_CORRECTION_LIMIT:
            denom = (exp_avg_sq / bias_correction2).sqrt().add_(eps)
        else:
            denom = exp_avg_sq.sqrt().add_(eps)

        if batch.is_scalar:
            update = grad / denom * (-lr * group["scalar_lr_scale"])
        else:
            param_rms = state["param_rms"]
            size_step_now = step % period == period - 1
            if size_step_now:
                param_rms.copy_(_rms(p))
            dims = list(range(1, p.ndim))
            state["scale_grads"][:, step % period] = (p * grad).sum(dim=dims, keepdim=True)
            update = grad / denom * (-lr)
            update.mul_(param_rms.clamp(min=group["param_min_rms"]))
            if size_step_now:
                update.add_(p * ScaledAdam._size_step(group, state, step))

        delta = state["delta"]
        delta.mul_(beta1).add_(update, alpha=1.0 - beta1)
        p.add_(delta)
        if batch.is_scalar:
            p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])

    @staticmethod
    def _size_step(group: dict[str, Any], state: dict[str, Tensor], step: int) -> Tensor:
        """Relative size change (n, 1, ..., 1) learned from the last ``size_update_period`` sum(p*g)."""
        period = group["size_update_period"]
        beta2_size = group["betas"][1] ** period
        scale_grads = state["scale_grads"]
        param_rms = state["param_rms"]
        scale_exp_avg_sq = state["scale_exp_avg_sq"]
        scale_exp_avg_sq.mul_(beta2_size).add_((scale_grads**2).mean(dim=1), alpha=1.0 - beta2_size)
        bias_correction = 1.0 - beta2_size ** ((step + 1) // period)
        coef = -group["lr"] * group["scalar_lr_scale"] * math.sqrt(bias_correction)
        step_size = scale_grads.sum(dim=1) * coef / (scale_exp_avg_sq.sqrt() + group["eps"])
        step_size.masked_fill_(param_rms < group["param_min_rms"], 0.0)
        step_size.clamp_(min=-_MAX_SCALE_STEP, max=_MAX_SCALE_STEP)
        max_step = (group["param_max_rms"] - param_rms) / param_rms
        return torch.minimum(step_size, max_step)


class Eden2:
    """Eden2 LR schedule: ``base_lr * (1 + (b/lr_batches)^2)^-0.5 * linear warm-up(b)``, set per batch.

    Constructing it leaves the optimizer's LR unchanged until the first ``step_batch`` call.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr_batches: float,
        warmup_batches: float = 500.0,
        warmup_start: float = 0.1,
    ) -> None:
        self.optimizer = optimizer
        self.lr_batches = lr_batches
        self.warmup_batches = warmup_batches
        self.warmup_start = warmup_start
        self.base_lrs: list[float] = [group["lr"] for group in optimizer.param_groups]
        self.epoch = 0
        self.batch = 0
        self._last_lr: list[float] = list(self.base_lrs)

    def get_lr(self) -> list[float]:
        """Learning rates (one per param group) for the current batch counter, in IEEE double."""
        b, big_l = self.batch, self.lr_batches
        factor = ((b**2 + big_l**2) / big_l**2) ** -0.5
        if b >= self.warmup_batches:
            warmup = 1.0
        else:
            warmup = self.warmup_start + (1.0 - self.warmup_start) * (b / self.warmup_batches)
        return [(base_lr * factor) * warmup for base_lr in self.base_lrs]

    def get_last_lr(self) -> list[float]:
        """LRs most recently written into the optimizer (the constructor LRs before any step)."""
        return list(self._last_lr)

    def step_batch(self, batch: int | None = None) -> None:
        """Set the batch counter (``batch`` given) or increment it (``None``), then update the LRs."""
        self.batch = self.batch + 1 if batch is None else batch
        self._set_lrs()

    def step_epoch(self, epoch: int | None = None) -> None:
        """Record the epoch counter (kept for the checkpoint format; Eden2's LR does not depend on it)."""
        self.epoch = self.epoch + 1 if epoch is None else epoch

    def _set_lrs(self) -> None:
        """Write ``get_lr()`` into the optimizer's param groups."""
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        """Serializable scheduler state (everything except the optimizer)."""
        return {
            "base_lrs": list(self.base_lrs),
            "epoch": self.epoch,
            "batch": self.batch,
            "lr_batches": self.lr_batches,
            "warmup_batches": self.warmup_batches,
            "warmup_start": self.warmup_start,
            "_last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state written by ``state_dict()`` (does not touch the optimizer's LRs)."""
        self.base_lrs = list(state_dict["base_lrs"])
        self.epoch = state_dict["epoch"]
        self.batch = state_dict["batch"]
        self.lr_batches = state_dict["lr_batches"]
        self.warmup_batches = state_dict["warmup_batches"]
        self.warmup_start = state_dict["warmup_start"]
        self._last_lr = list(state_dict["_last_lr"])
