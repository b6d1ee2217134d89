"""Parity tests for model averaging against ``averaging_ref.pt`` (OPTIM_GAN_README §3)."""

import pytest
import torch
from conftest import PARITY
from torch import Tensor, nn

from flow2gan.training.averaging import (
    average_checkpoints_with_averaged_model,
    average_state_dicts,
    make_averaged_copy,
    update_averaged_model,
)


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(PARITY / "averaging_ref.pt", weights_only=True)


class _TinyModel(nn.Module):
    """State dict: scale (6,1), log_scale (), running (6,) float buffer, count () int64 buffer, conv."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(cout, 1))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("running", torch.zeros(cout))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.conv = nn.Conv1d(cin, cout, k)


def _model(ref: dict) -> _TinyModel:
    cfg = ref["config"]
    model = _TinyModel(cfg["cin"], cfg["cout"], cfg["k"])
    assert list(model.state_dict()) == list(ref["initial_state"])
    model.load_state_dict(ref["initial_state"])
    return model


def _max_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _to_float32(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _run_average(ref: dict, save_at: tuple[int, ...]) -> dict[int, dict[str, Tensor]]:
    """Replay the running average; a checkpoint write at ``save_at`` casts model_avg to float32 in place."""
    model = _model(ref)
    model_avg = make_averaged_copy(model)
    period = ref["config"]["period"]
    out = {}
    for b in ref["update_batches"]:
        model.load_state_dict(ref["model_states"][b])
        update_averaged_model(model_avg, model, b, period)
        out[b] = {k: v.clone() for k, v in model_avg.state_dict().items()}
        if b in save_at:
            model_avg.to(torch.float32)
    return out


def test_make_averaged_copy_is_float64_deep_copy(ref: dict) -> None:
    model = _model(ref)
    model_avg = make_averaged_copy(model)
    state = model_avg.state_dict()
    assert state["scale"].dtype == torch.float64 and state["running"].dtype == torch.float64
    assert state["count"].dtype == torch.int64
    with torch.no_grad():
        model.scale.add_(1.0)
    assert torch.equal(state["scale"], ref["initial_state"]["scale"].double())


def test_running_average_float64(ref: dict) -> None:
    got = _run_average(ref, save_at=())
    worst = max(_max_diff(got[b], ref["avg_float64"][b]) for b in ref["update_batches"])
    assert worst == 0.0  # exact when cur*w is rounded in float32 before the float64 add
    assert got[1000]["count"].item() == 0


def test_running_average_with_epoch_saves(ref: dict) -> None:
    got = _run_average(ref, save_at=tuple(ref["config"]["epoch_ends"]))
    for b in ref["update_batches"]:
        assert str(got[b]["scale"].dtype) == ref["avg_with_epoch_saves_dtype"][b]
        assert _max_diff(got[b], ref["avg_with_epoch_saves"][b]) == 0.0


def test_update_is_noop_off_period(ref: dict) -> None:
    model = _model(ref)
    model_avg = make_averaged_copy(model)
    model.load_state_dict(ref["model_states"][200])
    before = {k: v.clone() for k, v in model_avg.state_dict().items()}
    for b in (0, 199, 201, 300):
        update_averaged_model(model_avg, model, b, 200)
    assert _max_diff(model_avg.state_dict(), before) == 0.0


def test_shared_storage_counted_once() -> None:
    shared = nn.Linear(3, 3, bias=False)
    model = nn.Sequential(shared, shared)
    model_avg = make_averaged_copy(model)
    start = model_avg.state_dict()["0.weight"].clone()
    with torch.no_grad():
        shared.weight.mul_(2.0)
    update_averaged_model(model_avg, model, 400, 200)
    expected = start * 0.5 + (shared.weight.detach() * 0.5).double()
    assert torch.equal(model_avg.state_dict()["0.weight"], expected)
    assert torch.equal(model_avg.state_dict()["1.weight"], expected)


@pytest.mark.parametrize("pair", ["400-1000", "200-1000", "600-800"])
def test_checkpoint_average_pairs(ref: dict, pair: str) -> None:
    s, e = (int(x) for x in pair.split("-"))
    start = _to_float32(ref["avg_float64"][s])
    end = _to_float32(ref["avg_float64"][e])
    end_copy = {k: v.clone() for k, v in end.items()}
    got = average_checkpoints_with_averaged_model(start, end, s, e)
    assert _max_diff(got, ref["ckpt_avg_pairs"][pair]) == 0.0
    assert _max_diff(end, end_copy) == 0.0  # inputs untouched


def test_checkpoint_average_epoch_files(ref: dict) -> None:
    s, e = ref["config"]["epoch_ends"]
    start = _to_float32(ref["avg_with_epoch_saves"][s])
    end = _to_float32(ref["avg_with_epoch_saves"][e])
    got = average_checkpoints_with_averaged_model(start, end, s, e)
    assert _max_diff(got, ref["ckpt_avg_epoch_files"]) == 0.0
    with pytest.raises(ValueError):
        average_checkpoints_with_averaged_model(start, end, e, s)


def test_plain_average_epoch_files(ref: dict) -> None:
    states = [ref["model_states"][b] for b in ref["config"]["epoch_ends"]]
    got = average_state_dicts(states)
    assert _max_diff(got, ref["plain_avg_epoch_files"]) == 0.0
    assert got["count"].item() == 701
