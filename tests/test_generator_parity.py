"""Generator parity against the reference tensors of tiny_24k_ref.pt (parity README section 4)."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import PARITY

from flow2gan.config import GeneratorConfig
from flow2gan.models.generator import MelAudioGenerator

AUDIO_ATOL = 1e-5
COND_ATOL = 1e-4
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(PARITY / "tiny_24k_ref.pt", weights_only=True)


@pytest.fixture(scope="module")
def model() -> MelAudioGenerator:
    config = GeneratorConfig.from_dict(json.loads((PARITY / "tiny_24k_config.json").read_text()))
    gen = MelAudioGenerator(config)
    gen.load_state_dict(torch.load(PARITY / "tiny_24k.pt", weights_only=True)["model"], strict=True)
    return gen.eval()


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def test_config_matches_reference(ref, model):
    assert model.config == GeneratorConfig.from_dict(ref["config"])
    assert sum(p.numel() for p in model.parameters()) == 116593


@torch.inference_mode()
def test_cond_encoder(ref, model):
    close(model.encode_cond(ref["mel"]), ref["cond_enc"], COND_ATOL)
    close(model.encode_cond(ref["batch_mel"]), ref["batch_cond_enc"], COND_ATOL)


@pytest.mark.parametrize("n", [1, 2, 4])
@torch.inference_mode()
def test_euler_sampler(ref, model, n):
    out = model.infer(ref["mel"], n_timesteps=n, noise=ref["noise"])
    close(out, ref[f"out_{n}"], AUDIO_ATOL)


@torch.inference_mode()
def test_one_step_is_estimate_at_t0(ref, model):
    pred = model.estimate(ref["noise"], model.encode_cond(ref["mel"]), torch.zeros(1))
    close(model.infer(ref["mel"], n_timesteps=1, noise=ref["noise"]), pred, 1e-6)


@torch.inference_mode()
def test_estimator_with_lengths_and_loss(ref, model):
    pred = model.estimate(ref["x_t"], ref["cond_enc"], ref["t"], ref["audio_lens"])
    close(pred, ref["pred"], AUDIO_ATOL)
    loss = model.fm_loss(pred, ref["wav"], ref["audio_lens"])
    torch.testing.assert_close(loss, ref["fm_loss"], rtol=LOSS_RTOL, atol=0)


@torch.inference_mode()
def test_branch_outputs(ref, model):
    cond = model.prepare_condition(ref["cond_enc"], ref["x_t"].shape[-1])
    t = ref["t"].reshape(-1)
    branches = [
        est(ref["x_t"], terms, est.decoder.time_scales(t), ref["audio_lens"])
        for est, terms in zip(model.estimators, cond.branch_terms, strict=True)
    ]
    close(torch.stack(branches, dim=1), ref["pred_branches"], AUDIO_ATOL)


@torch.inference_mode()
def test_estimator_frame_aligned_without_lengths(ref, model):
    wav = F.pad(ref["wav"], (0, ref["noise"].shape[-1] - ref["wav"].shape[-1]))
    x_t = (1 - ref["t"]) * ref["noise"] + ref["t"] * wav
    close(model.estimate(x_t, ref["cond_enc"], ref["t"]), ref["pred_full"], AUDIO_ATOL)


@torch.inference_mode()
def test_batch_with_lengths(ref, model):
    lens = ref["batch_audio_lens"]
    out = model.infer(ref["batch_mel"], audio_lens=lens, n_timesteps=2, noise=ref["batch_noise"])
    close(out, ref["batch_out_2"], AUDIO_ATOL)
    t = ref["batch_t"]
    x_t = (1 - t) * ref["batch_noise"] + t * ref["batch_audio"]
    pred = model.estimate(x_t, ref["batch_cond_enc"], t, lens)
    close(pred, ref["batch_pred"], AUDIO_ATOL)
    loss = model.fm_loss(pred, ref["batch_audio"], lens)
    torch.testing.assert_close(loss, ref["batch_fm_loss"], rtol=LOSS_RTOL, atol=0)


def test_training_forward_is_differentiable_and_seeded(ref, model):
    model.train()
    try:
        torch.manual_seed(1)
        loss_a = model(ref["batch_mel"], ref["batch_audio"], ref["batch_audio_lens"])
        loss_a.backward()
        torch.manual_seed(1)
        loss_b = model(ref["batch_mel"], ref["batch_audio"], ref["batch_audio_lens"])
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    assert torch.isfinite(loss_a) and loss_a.item() > 0
    assert loss_a.item() == loss_b.item()


def test_branch_dropout_only_in_training(model):
    branches = torch.stack([torch.full((64, 5), float(i + 1)) for i in range(3)], dim=1)
    assert torch.equal(model.fuse_branches(branches), torch.full((64, 5), 2.0))
    model.train()
    try:
        torch.manual_seed(0)
        fused = model.fuse_branches(branches)
    finally:
        model.eval()
    values = set(fused[:, 0].tolist())
    assert 2.0 in values  # most rows untouched
    assert values <= {2.0, 2.5, 2.0 * 1.5 - 0.5, 1.5}  # dropping branch 1/2/3 -> (2+3)/2, (1+3)/2, (1+2)/2
