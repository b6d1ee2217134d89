"""GAN-stage losses, multi-scale mel reconstruction and the GAN wrapper (parity and training semantics)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from conftest import PARITY
from test_discriminators import (
    assert_stats_close,
    disc_ref,
    mpd_formula_state_dict,
    mrd_state_dict,
    ref_inputs,
)
from torch import Tensor, nn

from flow2gan.models.gan import (
    GAN,
    GANConfig,
    GANLossScales,
    build_mel_recon_modules,
    clamped_log_mel,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    get_gan_config,
    mel_recon_per_scale,
)

LOSS_RTOL = 1e-5
SAMPLING_RATE = 24000


class StubGenerator(nn.Module):
    """Returns ``gain · wave[:, :max(audio_lens)]`` (B, T) and records the mode it was called in."""

    def __init__(self, wave: Tensor) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.register_buffer("wave", wave.clone())
        self.calls: list[dict[str, Any]] = []

    def infer(
        self, cond: Tensor, audio_lens: Tensor | None = None, n_timesteps: int = 1, clamp_pred: bool = False
    ) -> Tensor:
        """(B, M, F) condition -> (B, T) waveform, T = max(audio_lens) or the stored length."""
        n = int(audio_lens.max()) if audio_lens is not None else self.wave.shape[-1]
        self.calls.append(
            {
                "training": self.training,
                "grad": torch.is_grad_enabled(),
                "n_timesteps": n_timesteps,
                "clamp_pred": clamp_pred,
                "cond": cond,
            }
        )
        return self.gain * self.wave[:, :n]


@pytest.fixture(scope="module")
def gan_losses_ref() -> dict[str, Any]:
    """Reference GAN-stage losses on random scores / fmaps and 0.5 s noise waveforms."""
    return torch.load(PARITY / "gan_losses_ref.pt", weights_only=True)


@pytest.fixture(scope="module")
def melrecon_ref() -> dict[str, Any]:
    """Reference 7-scale mel reconstruction loss and log-mels."""
    return torch.load(PARITY / "melrecon_ref.pt", weights_only=True)


@pytest.fixture(scope="module")
def formula_gan() -> GAN:
    """GAN wrapper with closed-form MPD weights, stored MRD weights and a stub generator emitting ``fake``."""
    torch.manual_seed(0)
    _, fake = ref_inputs()
    gan = GAN(StubGenerator(fake), sampling_rate=SAMPLING_RATE)
    gan.mpd.load_state_dict(mpd_formula_state_dict(disc_ref()["mpd_formula"]["seed"]))
    missing, unexpected = gan.mrd.load_state_dict(mrd_state_dict(), strict=False)
    assert unexpected == [] and len(missing) == 3
    return gan


def test_hinge_and_feature_matching_losses_match_reference(gan_losses_ref: dict[str, Any]) -> None:
    """Loss functions on the stored mixed-shape scores and nested fmaps reproduce the reference scalars."""
    ref = gan_losses_ref
    torch.testing.assert_close(
        discriminator_loss(ref["score_real"], ref["score_fake"]), ref["disc_loss"], rtol=LOSS_RTOL, atol=0
    )
    torch.testing.assert_close(generator_loss(ref["score_fake"]), ref["gen_loss"], rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(
        feature_matching_loss(ref["fmap_real"], ref["fmap_fake"]),
        ref["feature_matching_loss"],
        rtol=LOSS_RTOL,
        atol=0,
    )


def test_feature_matching_detaches_real() -> None:
    """Gradients of the feature-matching loss reach the fake maps only."""
    real = [[torch.randn(1, 2, 3, requires_grad=True)]]
    fake = [[torch.randn(1, 2, 3, requires_grad=True)]]
    feature_matching_loss(real, fake).backward()
    assert real[0][0].grad is None
    assert fake[0][0].grad is not None and fake[0][0].grad.abs().sum() > 0


def test_mel_recon_matches_gan_losses_reference(gan_losses_ref: dict[str, Any]) -> None:
    """Per-scale and total mel L1 on the 0.5 s noise pair match the reference."""
    ref = gan_losses_ref
    config = get_gan_config("gan_multi_scale_mel_recon")
    assert list(config.mel_recon_n_ffts) == ref["mel_recon_n_ffts"]
    assert list(config.mel_recon_n_mels) == ref["mel_recon_n_mels"]
    modules = build_mel_recon_modules(ref["sampling_rate"], config.mel_recon_n_ffts, config.mel_recon_n_mels)
    with torch.no_grad():
        per_scale = torch.stack(mel_recon_per_scale(modules, ref["real"], ref["fake"]))
    torch.testing.assert_close(per_scale, ref["mel_recon_per_scale"], rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(per_scale.sum(), ref["mel_recon_loss"], rtol=LOSS_RTOL, atol=0)


def test_mel_recon_matches_melrecon_reference(melrecon_ref: dict[str, Any]) -> None:
    """Seven-scale mel loss, per-scale values, log-mel stats and full log-mels match the reference."""
    ref = melrecon_ref
    assert ref["hop"] == [n // 4 for n in ref["n_fft"]]
    modules = build_mel_recon_modules(SAMPLING_RATE, tuple(ref["n_fft"]), tuple(ref["n_mels"]))
    real, fake = ref["real_f16"].float(), ref["fake_f16"].float()
    with torch.no_grad():
        per_scale = mel_recon_per_scale(modules, real, fake)
        logmels = {
            kind: [clamped_log_mel(m, x) for m in modules] for kind, x in (("real", real), ("fake", fake))
        }
    torch.testing.assert_close(torch.stack(per_scale), torch.tensor(ref["per_scale"]), rtol=LOSS_RTOL, atol=0)
    assert sum(per_scale[1:], per_scale[0]).item() == pytest.approx(ref["total"], rel=LOSS_RTOL)
    for kind in ("real", "fake"):
        for logmel, stats in zip(logmels[kind], ref[f"logmel_stats_{kind}"], strict=True):
            assert_stats_close(logmel, stats, atol=1e-3, rtol=0)
        for n_fft in (128, 2048):
            full = ref[f"logmel_full_{kind}_nfft{n_fft}"]
            torch.testing.assert_close(logmels[kind][ref["n_fft"].index(n_fft)], full, atol=1e-3, rtol=0)


def test_gan_config_registry() -> None:
    """Both named configs exist with the reference scales; bad names and mismatched lists are rejected."""
    single = get_gan_config("gan_single_scale_mel_recon")
    assert (single.mel_recon_n_ffts, single.mel_recon_n_mels) == ((1024,), (100,))
    assert get_gan_config("gan_multi_scale_mel_recon").mel_recon_n_mels == (5, 10, 20, 40, 80, 160, 320)
    with pytest.raises(KeyError):
        get_gan_config("gan_no_such_config")
    with pytest.raises(ValueError):
        GANConfig((1024, 512), (100,))
    assert GANLossScales() == GANLossScales(1.0, 0.1, 1.0, 0.1, 1.0, 0.1, 45.0)


def test_gan_state_dict_layout(formula_gan: GAN) -> None:
    """Wrapper keys: generator.*, discriminator.{0,1}.* and mel_recon_modules.* exactly as in the manifest."""
    manifest = json.loads((PARITY / "disc_manifest.json").read_text())
    state = formula_gan.state_dict()
    assert [k for k in state if k.startswith("generator.")] == ["generator.gain", "generator.wave"]
    ours = {k: list(v.shape) for k, v in state.items() if not k.startswith("generator.")}
    assert list(ours) == list(manifest["state_dict_entries"])
    assert ours == {k: v["shape"] for k, v in manifest["state_dict_entries"].items()}
    single = GAN.from_config(StubGenerator(torch.zeros(1, 8)), "gan_single_scale_mel_recon", SAMPLING_RATE)
    mel_keys = [k for k in single.state_dict() if k.startswith("mel_recon_modules.")]
    assert mel_keys == ["mel_recon_modules.0.spectrogram.window", "mel_recon_modules.0.mel_scale.fb"]
    assert single.state_dict()["mel_recon_modules.0.mel_scale.fb"].shape == (513, 100)


@pytest.fixture(scope="module")
def formula_gan_losses(formula_gan: GAN) -> dict[str, Tensor]:
    """Both wrapper forwards on the stored real batch, with the stub generator emitting the stored fake."""
    real, _ = ref_inputs()
    mel = torch.zeros(2, 100, 57)
    with torch.no_grad():
        loss_d, info_d = formula_gan.discriminator_forward(real, mel, None, 4)
        loss_g, info_g = formula_gan.generator_forward(real, mel, None, 4)
    assert torch.equal(loss_d, info_d["loss_d"]) and torch.equal(loss_g, info_g["loss_g"])
    return {**info_d, **info_g}


@pytest.mark.parametrize(
    "name",
    [
        "disc_loss_mp",
        "disc_loss_mr",
        "gen_loss_mp",
        "gen_loss_mr",
        "feat_map_loss_mp",
        "feat_map_loss_mr",
        "mel_recon_loss",
        "loss_d",
        "loss_g",
    ],
)
def test_gan_forward_matches_reference(formula_gan_losses: dict[str, Tensor], name: str) -> None:
    """Every wrapper loss (default stage-2 scales) matches the reference GAN forward."""
    expected = disc_ref()["mpd_formula"]["gan_forward"][name]
    assert formula_gan_losses[name].item() == pytest.approx(expected, rel=LOSS_RTOL)


def test_gan_forward_info_keys(formula_gan_losses: dict[str, Tensor]) -> None:
    """The info dicts carry exactly the reference names, as detached scalars."""
    assert set(formula_gan_losses) == {
        "loss_d",
        "disc_loss_mp",
        "disc_loss_mr",
        "loss_g",
        "gen_loss_mp",
        "gen_loss_mr",
        "feat_map_loss_mp",
        "feat_map_loss_mr",
        "mel_recon_loss",
    }
    assert all(v.shape == () and not v.requires_grad for v in formula_gan_losses.values())


def _short_batch() -> tuple[Tensor, Tensor, Tensor]:
    """A 2400-sample slice of the stored real batch, a dummy mel and lengths whose max is 2400."""
    real, _ = ref_inputs()
    return real[:, :2400].contiguous(), torch.zeros(2, 100, 10), torch.tensor([2400, 2000])


def test_discriminator_step_modes_and_gradients(formula_gan: GAN) -> None:
    """D step: generator called in eval mode without grad; discriminators train and receive gradients."""
    audio, mel, lens = _short_batch()
    formula_gan.zero_grad(set_to_none=True)
    formula_gan.generator.calls.clear()
    formula_gan.set_step_modes(discriminator_step=True)
    loss_d, info = formula_gan(audio, mel, lens, 2, discriminator_step=True)
    (call,) = formula_gan.generator.calls
    assert (call["training"], call["grad"], call["n_timesteps"], call["clamp_pred"]) == (
        False,
        False,
        2,
        False,
    )
    assert call["cond"] is mel
    assert all(m.training for m in formula_gan.discriminator.modules())
    loss_d.backward()
    assert formula_gan.generator.gain.grad is None
    assert formula_gan.mpd.discriminators[4].conv_post.weight.grad.abs().sum() > 0
    assert formula_gan.mrd.discriminators[2].band_convs[4][0].weight.grad.abs().sum() > 0
    assert set(info) == {"loss_d", "disc_loss_mp", "disc_loss_mr"}
    formula_gan.zero_grad(set_to_none=True)


def test_generator_step_modes_and_gradients(formula_gan: GAN) -> None:
    """G step: generator called in train mode with grad (gradients reach it); discriminators in eval mode."""
    audio, mel, lens = _short_batch()
    formula_gan.zero_grad(set_to_none=True)
    formula_gan.generator.calls.clear()
    formula_gan.eval()
    formula_gan.set_step_modes(discriminator_step=False)
    loss_g, info = formula_gan(audio, mel, lens, 4, discriminator_step=False)
    (call,) = formula_gan.generator.calls
    assert (call["training"], call["grad"]) == (True, True)
    assert (call["n_timesteps"], call["clamp_pred"]) == (4, False)
    assert not any(m.training for m in formula_gan.discriminator.modules())
    loss_g.backward()
    gain_grad = formula_gan.generator.gain.grad
    assert gain_grad is not None and torch.isfinite(gain_grad) and gain_grad.abs() > 0
    assert info["mel_recon_loss"] > 0
    formula_gan.zero_grad(set_to_none=True)


def test_mel_only_generator_step_skips_the_discriminators(formula_gan: GAN) -> None:
    """``adversarial=False``: loss = scale x mel L1, no discriminator runs or gets a gradient."""
    audio, mel, lens = _short_batch()
    formula_gan.zero_grad(set_to_none=True)
    formula_gan.set_step_modes(discriminator_step=False)
    calls = []
    hooks = [d.register_forward_hook(lambda *a: calls.append(1)) for d in formula_gan.discriminator]
    try:
        loss_g, info = formula_gan(audio, mel, lens, 2, discriminator_step=False, adversarial=False)
    finally:
        for hook in hooks:
            hook.remove()
    assert not calls and set(info) == {"loss_g", "mel_recon_loss"}
    scale = formula_gan.loss_scales.mel_recon_loss_scale
    assert torch.allclose(loss_g, scale * info["mel_recon_loss"])
    loss_g.backward()
    assert formula_gan.generator.gain.grad.abs() > 0
    assert all(p.grad is None for p in formula_gan.discriminator.parameters())
    formula_gan.zero_grad(set_to_none=True)


def test_generator_output_shape_mismatch_is_rejected(formula_gan: GAN) -> None:
    """A fake whose length differs from the real batch raises instead of silently broadcasting."""
    audio, mel, _ = _short_batch()
    with pytest.raises(ValueError, match="does not match"):
        formula_gan.discriminator_forward(audio, mel, torch.tensor([2000, 1800]), 1)


def test_discriminator_with_zero_scales_is_not_run(formula_gan: GAN) -> None:
    """MRD scales 0 (MPD only): the MRD never runs, its terms are 0, the MPD terms are unchanged."""
    audio, mel, lens = _short_batch()
    mpd_only = GANLossScales(disc_loss_mr_scale=0.0, gen_loss_mr_scale=0.0, feat_map_loss_mr_scale=0.0)
    calls: list[int] = []
    for discriminator_step in (True, False):
        formula_gan.set_step_modes(discriminator_step)
        _, full = formula_gan(audio, mel, lens, 1, discriminator_step=discriminator_step)
        calls.clear()
        hook = formula_gan.mrd.register_forward_hook(lambda *a: calls.append(1))
        formula_gan.loss_scales = mpd_only
        try:
            loss, info = formula_gan(audio, mel, lens, 1, discriminator_step=discriminator_step)
        finally:
            hook.remove()
            formula_gan.loss_scales = GANLossScales()
        assert not calls
        mr_keys = [k for k in info if k.endswith("_mr")]
        mp_keys = [k for k in info if k.endswith("_mp")]
        assert len(mr_keys) == len(mp_keys) >= 1 and all(info[k] == 0 for k in mr_keys)
        assert all(torch.allclose(info[k], full[k]) for k in mp_keys)
        expected = sum(full[k] * getattr(mpd_only, f"{k}_scale") for k in mp_keys)
        if not discriminator_step:
            expected = expected + mpd_only.mel_recon_loss_scale * full["mel_recon_loss"]
        torch.testing.assert_close(loss, expected)
    formula_gan.zero_grad(set_to_none=True)


def test_loss_scales_validation() -> None:
    """Negative or non-finite weights and no trained discriminator are errors; a half-off one warns."""
    for name in ("disc_loss_mp_scale", "gen_loss_mr_scale", "feat_map_loss_mp_scale", "mel_recon_loss_scale"):
        for bad in (-0.1, math.nan, math.inf):
            flag = "--" + name.replace("_", "-")
            with pytest.raises(ValueError, match=f"{flag} must be a finite number >= 0"):
                GANLossScales(**{name: bad})
    with pytest.raises(ValueError, match="no discriminator would be trained"):
        GANLossScales(disc_loss_mp_scale=0.0, disc_loss_mr_scale=0.0)


def test_half_off_discriminator_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="flow2gan.models.gan"):
        GANLossScales(disc_loss_mr_scale=0.0)
        GANLossScales(gen_loss_mp_scale=0.0, feat_map_loss_mp_scale=0.0)
        GANLossScales(disc_loss_mr_scale=0.0, gen_loss_mr_scale=0.0, feat_map_loss_mr_scale=0.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "MRD is used but never trained" in messages[0]
    assert "MPD is trained but never used" in messages[1]
