"""Parity tests for ScaledAdam and Eden2 against ``optim_ref.pt`` and ``eden_ref.json`` (README §1-2)."""

import io
import json
import math

import pytest
import torch
from conftest import PARITY
from torch import Tensor, nn

from flow2gan.training.optim import Eden2, ScaledAdam

ATOL = RTOL = 1e-5


@pytest.fixture(scope="module")
def optim_ref() -> dict:
    return torch.load(PARITY / "optim_ref.pt", weights_only=True)


@pytest.fixture(scope="module")
def s1(optim_ref: dict) -> dict:
    return optim_ref["stage1"]


def _build(names: list[str], init: dict[str, Tensor]) -> nn.Module:
    """Tiny module tree whose named_parameters() are exactly ``names`` (in order), loaded from ``init``."""
    root = nn.Module()
    for name in names:
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                setattr(module, part, nn.Module())
            module = getattr(module, part)
        setattr(module, leaf, nn.Parameter(init[name].clone()))
    assert [n for n, _ in root.named_parameters()] == names
    return root


def _stage1_setup(s1: dict) -> tuple[nn.Module, ScaledAdam, Eden2]:
    model = _build(s1["names"], s1["init"])
    lr = s1["base_lr"]
    optimizer = ScaledAdam(
        [{"named_params": list(model.named_parameters()), "lr": lr}], lr=lr, clipping_scale=2.0
    )
    scheduler = Eden2(optimizer, lr_batches=s1["lr_batches"], warmup_start=0.1)
    return model, optimizer, scheduler


def _set_stage1_grads(s1: dict, model: nn.Module, t: int) -> None:
    """Gradients of update t+1; the README's None-grad parameter gets ``None`` at the listed updates."""
    for name, p in model.named_parameters():
        if name == s1["none_grad_param"] and t + 1 in s1["none_grad_steps"]:
            p.grad = None
        else:
            p.grad = s1["grads_f16"][name][t].float()


def _stage1_steps(s1: dict, model: nn.Module, optimizer: ScaledAdam, scheduler: Eden2, ts: range) -> dict:
    """Run the stage-1 loop for batch indices ``ts``; record LR, clip factor, threshold, params."""
    clip_param = dict(model.named_parameters())[s1["clip_state_param"]]
    rec: dict = {"lr": [], "clip": [], "threshold": [], "abs_sum": [], "params": {}}
    for t in ts:
        _set_stage1_grads(s1, model, t)
        scheduler.step_batch(t)
        rec["lr"].append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        optimizer.zero_grad()
        rec["clip"].append(optimizer.last_clip_factors[0])
        rec["threshold"].append(optimizer.state[clip_param]["model_norm_threshold"].item())
        rec["abs_sum"].append(sum(p.detach().double().abs().sum().item() for p in model.parameters()))
        if t + 1 in s1["record_steps"]:
            rec["params"][t + 1] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return rec


@pytest.fixture(scope="module")
def stage1_run(s1: dict) -> tuple[dict, nn.Module, ScaledAdam]:
    model, optimizer, scheduler = _stage1_setup(s1)
    rec = _stage1_steps(s1, model, optimizer, scheduler, range(len(s1["lr_used"])))
    return rec, model, optimizer


def _assert_close(got: Tensor, want: Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    bad = (got.double() - want.double()).abs() > ATOL + RTOL * want.double().abs()
    assert not bad.any(), f"{what}: max |diff| {(got - want).abs().max().item():.3e}"


def test_stage1_lr_and_clipping(s1: dict, stage1_run: tuple) -> None:
    rec = stage1_run[0]
    lr_ref = s1["lr_used"].tolist()
    assert all(abs(a - b) <= 1e-12 * b for a, b in zip(rec["lr"], lr_ref, strict=True))
    clip_ref = s1["clip_factor"].tolist()
    assert all(abs(a - b) <= 1e-5 for a, b in zip(rec["clip"], clip_ref, strict=True))
    clipped = [t + 1 for t, c in enumerate(rec["clip"]) if c < 1.0]
    assert clipped == [16, 34, 58, 121, 122, 181, 234]
    for got, want in zip(rec["threshold"], s1["threshold_after"].tolist(), strict=True):
        assert (math.isnan(got) and math.isnan(want)) or abs(got - want) <= 1e-5 * want
    for got, want in zip(rec["abs_sum"], s1["abs_sum_after"].tolist(), strict=True):
        assert abs(got - want) <= 1e-6 * want


def test_stage1_params(s1: dict, stage1_run: tuple) -> None:
    rec = stage1_run[0]
    assert sorted(rec["params"]) == sorted(s1["params_after"])
    for step, params in s1["params_after"].items():
        for name, want in params.items():
            _assert_close(rec["params"][step][name], want, f"step {step} {name}")
    assert rec["params"][200]["probe.clamp_scalar"].item() == 10.0  # scalar clamp reached


def test_stage1_final_state(s1: dict, stage1_run: tuple) -> None:
    _, model, optimizer = stage1_run
    params = dict(model.named_parameters())
    for name, want_state in s1["final_state"].items():
        state = optimizer.state[params[name]]
        assert state["step"] == want_state["step"]
        for key, want in want_state.items():
            if key != "step":
                _assert_close(state[key], want, f"{name}.{key}")
    clip_state = optimizer.state[params[s1["clip_state_param"]]]
    _assert_close(clip_state["model_norms"], s1["final_model_norms"], "model_norms")


def test_stage1_batch_order(s1: dict) -> None:
    model, optimizer, _ = _stage1_setup(s1)
    names = {p: n for n, p in model.named_parameters()}
    batches = optimizer._make_batches(optimizer.param_groups[0])
    assert [names[b.params[0]] for b in batches] == s1["batch_order"]
    assert [b.is_scalar for b in batches] == [True, True, False, False, False, False]


def test_stage2_convention(optim_ref: dict) -> None:
    s2 = optim_ref["stage2"]
    model = _build(s2["names"], s2["init"])
    optimizer = ScaledAdam(model.named_parameters(), lr=s2["base_lr"], clipping_scale=2.0)
    assert optimizer.param_groups[0]["param_names"] == s2["names"]
    scheduler = Eden2(optimizer, lr_batches=s2["lr_batches"], warmup_start=0.1)
    scheduler.step_batch(0)
    n_updates = len(s2["lr_used"])
    for t in range(n_updates):
        optimizer.zero_grad()
        for name, p in model.named_parameters():
            p.grad = s2["grads_f16"][name][t].float()
        lr = optimizer.param_groups[0]["lr"]
        assert abs(lr - s2["lr_used"][t].item()) <= 1e-12 * lr
        optimizer.step()
        scheduler.step_batch()
        for name, p in model.named_parameters():
            _assert_close(p.detach(), s2["params_after"][name][t], f"update {t + 1} {name}")
    assert scheduler.batch == s2["scheduler_batch_after"]


def _snapshot(model: nn.Module, optimizer: ScaledAdam) -> dict:
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    for index, p in enumerate(model.parameters()):
        for key, value in optimizer.state[p].items():
            state[f"{index}.{key}"] = value.clone() if isinstance(value, Tensor) else value
    return state


def _assert_same_snapshot(a: dict, b: dict) -> None:
    """Bit-identical comparison of two ``_snapshot`` results (NaN equals NaN)."""
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, Tensor):
            torch.testing.assert_close(value, b[key], rtol=0.0, atol=0.0, equal_nan=True, msg=key)
        else:
            assert value == b[key], key


def test_resume_is_bit_identical(s1: dict) -> None:
    n_total, n_first = 130, 97
    model, optimizer, scheduler = _stage1_setup(s1)
    _stage1_steps(s1, model, optimizer, scheduler, range(n_total))
    reference = _snapshot(model, optimizer)

    model, optimizer, scheduler = _stage1_setup(s1)
    _stage1_steps(s1, model, optimizer, scheduler, range(n_first))
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model, optimizer, scheduler = _stage1_setup(s1)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    assert scheduler.batch == n_first - 1
    rec = _stage1_steps(s1, model, optimizer, scheduler, range(n_first, n_total))
    assert min(rec["clip"]) < 1.0  # the resumed segment clips (updates 121, 122) with restored statistics
    _assert_same_snapshot(reference, _snapshot(model, optimizer))


def _grads_at(s1: dict, t: int) -> dict[str, Tensor]:
    return {name: g[t].float() for name, g in s1["grads_f16"].items()}


def test_none_grad_equals_zero_grad(s1: dict) -> None:
    runs = []
    for use_none in (True, False):
        model, optimizer, _ = _stage1_setup(s1)
        for t in range(6):
            for name, p in model.named_parameters():
                p.grad = _grads_at(s1, t)[name]
            if t == 4:
                p = model.block.act.weight
                p.grad = None if use_none else torch.zeros_like(p)
            optimizer.step()
        runs.append(_snapshot(model, optimizer))
    _assert_same_snapshot(runs[0], runs[1])
    assert runs[0]["6.step"] == 6  # the None-grad parameter still advanced its counter


def test_grad_scaler_step(s1: dict) -> None:
    n_steps = 12
    model_ref, opt_ref, _ = _stage1_setup(s1)
    model, optimizer, _ = _stage1_setup(s1)
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0, growth_interval=1000)
    for t in range(n_steps):
        grads = _grads_at(s1, t)
        for name, p in model_ref.named_parameters():
            p.grad = grads[name]
        opt_ref.step()
        loss = sum((p * grads[name]).sum() for name, p in model.named_parameters())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(model_ref.parameters(), model.parameters(), strict=True))
    before = _snapshot(model, optimizer)
    loss = sum((p * grads[name]).sum() for name, p in model.named_parameters()) * math.inf
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # non-finite gradients: the step must be skipped
    scaler.update()
    _assert_same_snapshot(before, _snapshot(model, optimizer))
    assert scaler.get_scale() == 8.0


def test_constructor_validation(s1: dict) -> None:
    model = _build(s1["names"], s1["init"])
    with pytest.raises(ValueError):
        ScaledAdam(model.named_parameters(), lr=-1.0)
    with pytest.raises(ValueError):
        ScaledAdam([], lr=0.1)
    plain = ScaledAdam(model.parameters(), lr=0.1)
    assert "param_names" not in plain.param_groups[0]
    assert len(plain.param_groups[0]["params"]) == len(s1["names"])


@pytest.fixture(scope="module")
def eden_ref() -> dict:
    return json.loads((PARITY / "eden_ref.json").read_text())["schedules"]


def _eden(sched: dict) -> tuple[ScaledAdam, Eden2]:
    optimizer = ScaledAdam([nn.Parameter(torch.zeros(3))], lr=sched["base_lr"])
    scheduler = Eden2(
        optimizer,
        lr_batches=sched["lr_batches"],
        warmup_batches=sched["warmup_batches"],
        warmup_start=sched["warmup_start"],
    )
    return optimizer, scheduler


@pytest.mark.parametrize(
    "key", ["base_lr=0.035,lr_batches=7500", "base_lr=0.002,lr_batches=20000", "base_lr=0.02,lr_batches=5000"]
)
def test_eden2_exact(eden_ref: dict, key: str) -> None:
    sched = eden_ref[key]
    optimizer, scheduler = _eden(sched)
    assert optimizer.param_groups[0]["lr"] == sched["lr_before_any_step_batch"]
    assert scheduler.get_last_lr() == [sched["lr_before_any_step_batch"]]
    for b, want in zip(sched["batch_index"], sched["lr"], strict=True):
        scheduler.step_batch(b)
        assert optimizer.param_groups[0]["lr"] == want, b
        assert scheduler.get_last_lr() == [want]

    optimizer, scheduler = _eden(sched)
    scheduler.step_batch(0)
    for want in sched["lr_for_updates_1_to_30"]:
        assert optimizer.param_groups[0]["lr"] == want
        scheduler.step_batch()
    assert scheduler.batch == 30


def test_eden2_state_dict_round_trip(eden_ref: dict) -> None:
    sched = eden_ref["base_lr=0.002,lr_batches=20000"]
    _, scheduler = _eden(sched)
    scheduler.step_batch(0)
    for _ in range(7):
        scheduler.step_batch()
    scheduler.step_epoch(3)
    optimizer, restored = _eden(sched)
    restored.load_state_dict(scheduler.state_dict())
    assert optimizer.param_groups[0]["lr"] == sched["base_lr"]  # loading does not touch the optimizer
    assert (restored.batch, restored.epoch) == (7, 3)
    assert restored.get_last_lr() == scheduler.get_last_lr()
    restored.step_batch()
    assert optimizer.param_groups[0]["lr"] == sched["lr_for_updates_1_to_30"][8]
