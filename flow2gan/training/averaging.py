"""Model averaging: running mean ``model_avg`` during training and checkpoint averaging (SPEC §5.5)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = [
    "average_checkpoints_with_averaged_model",
    "average_state_dicts",
    "make_averaged_copy",
    "update_averaged_model",
]


def make_averaged_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` on CPU with float parameters/buffers in float64 (integers untouched)."""
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float64)


def _unique_float_entries(state_dict: dict[str, Tensor]) -> list[str]:
    """Keys of floating-point entries, keeping only the first key of entries that share memory."""
    seen: set[int] = set()
    keys = []
    for key, value in state_dict.items():
        if not value.is_floating_point():
            continue
        address = value.data_ptr()
        if address in seen:
            continue
        seen.add(address)
        keys.append(key)
    return keys


@torch.no_grad()
def update_averaged_model(
    model_avg: nn.Module, model: nn.Module, batch_idx_train: int, average_period: int
) -> None:
    """Fold ``model`` into the running mean ``model_avg`` (in place) when ``batch_idx_train`` calls for it.

    This is a no-op unless ``batch_idx_train > 0`` and ``batch_idx_train % average_period == 0``, so it
    may be called after every optimizer step. Each float entry (parameters and float buffers; shared
    storage counted once) becomes ``avg * (1 - w) + (cur * w)`` with ``w = average_period / batch_idx_train``,
    where ``cur * w`` is rounded in the live model's dtype before being added in ``model_avg``'s dtype.
    Integer buffers are left untouched.
    """
    if batch_idx_train <= 0 or batch_idx_train % average_period != 0:
        return
    weight_cur = average_period / batch_idx_train
    weight_avg = 1.0 - weight_cur
    cur = model.state_dict()
    avg = model_avg.state_dict()
    for key in _unique_float_entries(avg):
        value = avg[key]
        value.mul_(weight_avg)
        value.add_((cur[key].detach() * weight_cur).to(value.device))


@torch.no_grad()
def average_checkpoints_with_averaged_model(
    start: dict[str, Tensor], end: dict[str, Tensor], batch_idx_start: int, batch_idx_end: int
) -> dict[str, Tensor]:
    """Average of the model over batches (start, end] from two cumulative ``model_avg`` state dicts.

    Float entries: ``(end + start * (w_s / w_e)) * w_e`` evaluated in the entries' dtype, with
    ``w_e = e / (e - s)`` and ``w_s = 1 - w_e`` (i.e. ``(e*end - s*start) / (e - s)``). Integer entries
    are copied from ``end``. The inputs are not modified.
    """
    if not 0 <= batch_idx_start < batch_idx_end:
        raise ValueError(f"need 0 <= start < end, got {batch_idx_start} and {batch_idx_end}")
    weight_end = batch_idx_end / (batch_idx_end - batch_idx_start)
    weight_start = 1.0 - weight_end
    averaged = {}
    for key, value in end.items():
        value = value.clone()
        if value.is_floating_point():
            value += start[key] * (weight_start / weight_end)
            value *= weight_end
        averaged[key] = value
    return averaged


@torch.no_grad()
def average_state_dicts(state_dicts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Plain mean of state dicts: summed in list order, then ``/= n`` (floats) or ``//= n`` (integers)."""
    if not state_dicts:
        raise ValueError("need at least one state dict to average")
    averaged = {key: value.clone() for key, value in state_dicts[0].items()}
    for state_dict in state_dicts[1:]:
        for key, value in averaged.items():
            value += state_dict[key]
    n = len(state_dicts)
    for value in averaged.values():
        if value.is_floating_point():
            value /= n
        else:
            value //= n
    return averaged
