"""Discriminator parity: state-dict layout, MRD full parity, MPD folding/shapes and closed-form weights."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

import numpy as np
import pytest
import torch
from conftest import PARITY
from torch import Tensor

from flow2gan.models.discriminators import (
    MultiPeriodDiscriminator,
    MultiResolutionDiscriminator,
    PeriodDiscriminator,
    band_bins,
)
from flow2gan.models.gan import discriminator_loss, feature_matching_loss, generator_loss

SCORE_TOL = {"atol": 5e-5, "rtol": 1e-4}
LOSS_RTOL = 1e-5
MASK64 = (1 << 64) - 1


@lru_cache(maxsize=1)
def disc_ref() -> dict[str, Any]:
    """The stored discriminator references (loaded once per session)."""
    return torch.load(PARITY / "disc_ref.pt", weights_only=True)


def ref_inputs() -> tuple[Tensor, Tensor]:
    """The float16-stored real and fake batches (2, 14400) cast to float32."""
    ref = disc_ref()
    return ref["real_f16"].float(), ref["fake_f16"].float()


def mrd_state_dict() -> dict[str, Tensor]:
    """The stored MRD parameters cast to float32 (no window buffers)."""
    return {k: v.float() for k, v in disc_ref()["mrd_state_dict_f16"].items()}


def splitmix64_uniform(seed: int, index: int, n: int) -> np.ndarray:
    """u = (splitmix64((seed << 48) + (index << 32) + n) >> 40) / 2**24 for n = 0..n-1 (float64)."""
    z = np.arange(n, dtype=np.uint64)
    z += np.uint64(((seed << 48) + (index << 32) + 0x9E3779B97F4A7C15) & MASK64)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(np.float64) / 2.0**24


@lru_cache(maxsize=1)
def mpd_formula_state_dict(seed: int) -> dict[str, Tensor]:
    """Closed-form MPD weights: uniform ±sqrt(6 / fan_in) weights and ±0.01 biases from splitmix64."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MultiPeriodDiscriminator().state_dict().items()}
    out = {}
    for index, (name, shape) in enumerate(shapes.items()):
        u = splitmix64_uniform(seed, index, math.prod(shape))
        scale = math.sqrt(6.0 / math.prod(shape[1:])) if name.endswith("weight") else 0.01
        out[name] = torch.from_numpy(((2.0 * u - 1.0) * scale).astype(np.float32).reshape(shape))
    return out


def assert_stats_close(x: Tensor, stats: dict[str, Any], atol: float = 5e-5, rtol: float = 1e-4) -> None:
    """Checks shape, sums (|Δ| ≤ 1e-5·abs_sum), extrema and sampled values of ``x`` against stored stats."""
    assert list(x.shape) == list(stats["shape"])
    x64 = x.detach().double()
    bound = 1e-5 * stats["abs_sum"]
    assert abs(x64.sum().item() - stats["sum"]) <= bound
    assert abs(x64.abs().sum().item() - stats["abs_sum"]) <= bound
    assert x64.min().item() == pytest.approx(stats["min"], abs=atol, rel=rtol)
    assert x64.max().item() == pytest.approx(stats["max"], abs=atol, rel=rtol)
    samples = x.detach().flatten()[torch.as_tensor(stats["sample_idx"])]
    torch.testing.assert_close(samples, stats["sample_val"], atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    """The discriminator / mel-loss state-dict manifest."""
    return json.loads((PARITY / "disc_manifest.json").read_text())


@pytest.fixture(scope="module")
def mrd_outputs() -> tuple[list[Tensor], list[Tensor], list[list[Tensor]], list[list[Tensor]]]:
    """MRD with the stored weights on the stored inputs."""
    mrd = MultiResolutionDiscriminator()
    missing, unexpected = mrd.load_state_dict(mrd_state_dict(), strict=False)
    assert unexpected == [] and all(k.endswith("spec_fn.window") for k in missing)
    with torch.no_grad():
        return mrd(*ref_inputs())


@pytest.fixture(scope="module")
def mpd_formula_outputs() -> tuple[list[Tensor], list[Tensor], list[list[Tensor]], list[list[Tensor]]]:
    """MPD with the closed-form weights on the stored inputs."""
    with torch.device("meta"):
        mpd = MultiPeriodDiscriminator()
    mpd.load_state_dict(mpd_formula_state_dict(disc_ref()["mpd_formula"]["seed"]), assign=True)
    with torch.no_grad():
        return mpd(*ref_inputs())


def _manifest_part(manifest: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    """Manifest entries under ``prefix`` with the prefix stripped, in stored order."""
    entries = manifest["state_dict_entries"]
    return {k[len(prefix) :]: v for k, v in entries.items() if k.startswith(prefix)}


@pytest.mark.parametrize(
    ("prefix", "factory", "count_key"),
    [
        ("discriminator.0.", MultiPeriodDiscriminator, "discriminator.0 (multi-period) parameters"),
        ("discriminator.1.", MultiResolutionDiscriminator, "discriminator.1 (multi-resolution) parameters"),
    ],
)
def test_state_dict_matches_manifest(
    manifest: dict[str, Any], prefix: str, factory: type[torch.nn.Module], count_key: str
) -> None:
    """Key names and order, shapes, dtypes, parameter/buffer kind and parameter counts match the manifest."""
    with torch.device("meta"):
        module = factory()
    expected = _manifest_part(manifest, prefix)
    state = module.state_dict()
    assert list(state) == list(expected)
    params = dict(module.named_parameters())
    for name, tensor in state.items():
        assert list(tensor.shape) == expected[name]["shape"], name
        assert str(tensor.dtype).removeprefix("torch.") == expected[name]["dtype"], name
        assert (name in params) == (expected[name]["kind"] == "parameter"), name
    assert sum(p.numel() for p in module.parameters()) == manifest["parameter_counts"][count_key]
    for i, sub in enumerate(module.discriminators):
        key = next(k for k in manifest["parameter_counts"] if k.startswith(f"{prefix}discriminators.{i} "))
        assert sum(p.numel() for p in sub.parameters()) == manifest["parameter_counts"][key]


def test_mrd_windows_and_bands(manifest: dict[str, Any]) -> None:
    """Window buffers are periodic Hann windows; band bin edges and hops match the manifest."""
    mrd = MultiResolutionDiscriminator()
    for i, sub in enumerate(mrd.discriminators):
        info = manifest["mrd_resolutions"][f"discriminator.1.discriminators.{i}"]
        assert sub.window_length == info["window_length"]
        assert sub.spec_fn.hop_length == info["hop_length"]
        assert [list(b) for b in band_bins(sub.window_length)] == info["band_bins"]
        torch.testing.assert_close(sub.spec_fn.window, torch.hann_window(sub.window_length), atol=0, rtol=0)
    with torch.device("meta"):
        mpd = MultiPeriodDiscriminator()
    assert tuple(p.period for p in mpd.discriminators) == tuple(manifest["mpd_periods"])


def test_mrd_scores_match_reference(mrd_outputs: tuple) -> None:
    """MRD scores (B, 1, frames, ΣF') are unflattened and match the reference."""
    scores_real, scores_fake, _, _ = mrd_outputs
    ref = disc_ref()
    expected = ref["mrd_scores_real"] + ref["mrd_scores_fake"]
    for ours, theirs in zip(scores_real + scores_fake, expected, strict=True):
        torch.testing.assert_close(ours, theirs, **SCORE_TOL)


def test_mrd_fmaps_match_reference(mrd_outputs: tuple) -> None:
    """All 3×21 MRD feature maps match the stored stats; three maps are compared in full."""
    _, scores_fake, fmaps_real, fmaps_fake = mrd_outputs
    ref = disc_ref()
    for fmaps, stats in ((fmaps_real, ref["mrd_fmap_stats_real"]), (fmaps_fake, ref["mrd_fmap_stats_fake"])):
        assert [len(f) for f in fmaps] == [21, 21, 21]
        for maps, map_stats in zip(fmaps, stats, strict=True):
            for fmap, stat in zip(maps, map_stats, strict=True):
                assert_stats_close(fmap, stat)
    assert all(f[-1] is s for f, s in zip(fmaps_fake, scores_fake, strict=True))
    for name, full in ref["mrd_fmap_full"].items():
        base, kind = name.rsplit("_", 1)
        r, j = ref["mrd_fmap_full_index"][base]
        ours = (fmaps_real if kind == "real" else fmaps_fake)[r][j]
        torch.testing.assert_close(ours, full, **SCORE_TOL)


def test_mrd_losses_match_reference(mrd_outputs: tuple) -> None:
    """Hinge and feature-matching losses of the MRD outputs match the reference scalars."""
    scores_real, scores_fake, fmaps_real, fmaps_fake = mrd_outputs
    ref = disc_ref()
    assert discriminator_loss(scores_real, scores_fake).item() == pytest.approx(
        ref["mrd_disc_loss"], rel=LOSS_RTOL
    )
    assert generator_loss(scores_fake).item() == pytest.approx(ref["mrd_gen_loss"], rel=LOSS_RTOL)
    assert feature_matching_loss(fmaps_real, fmaps_fake).item() == pytest.approx(
        ref["mrd_fm_loss"], rel=LOSS_RTOL
    )


def test_mrd_input_normalisation_is_gain_and_offset_invariant(mrd_outputs: tuple) -> None:
    """DC removal and peak normalisation make the MRD blind to gain and offset of the input."""
    real, fake = ref_inputs()
    mrd = MultiResolutionDiscriminator()
    mrd.load_state_dict(mrd_state_dict(), strict=False)
    with torch.no_grad():
        scores_real, scores_fake, _, _ = mrd(3.0 * real + 0.25, 0.5 * fake - 0.1)
    for ours, theirs in zip(scores_real + scores_fake, mrd_outputs[0] + mrd_outputs[1], strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_mpd_fold_matches_reference() -> None:
    """Right reflect padding and folding to (B, 1, T/p, p) match the stored period-7 input and shapes."""
    ref = disc_ref()
    real, _ = ref_inputs()
    period = ref["mpd_reshape_period"]
    assert ref["mpd_reshape_input"] == "real"
    with torch.device("meta"):
        subs = {p: PeriodDiscriminator(p) for p in (2, 3, 5, 7, 11)}
    torch.testing.assert_close(subs[period].fold(real), ref["mpd_reshape"], atol=0, rtol=0)
    for p, shape in ref["mpd_reshape_shapes"].items():
        assert list(subs[int(p)].fold(real).shape) == list(shape)


def test_mpd_formula_weight_checksums() -> None:
    """The vectorised splitmix64 weights reproduce the stored per-tensor double sums."""
    formula = disc_ref()["mpd_formula"]
    weights = mpd_formula_state_dict(formula["seed"])
    assert list(weights) == list(formula["weight_checksums"])
    for name, checksum in formula["weight_checksums"].items():
        assert weights[name].double().sum().item() == pytest.approx(checksum, rel=1e-12, abs=1e-12)


def test_mpd_period2_shapes(mpd_formula_outputs: tuple) -> None:
    """Period-2 score is flattened to (B, 178); its 5 fmaps have the stored shapes."""
    scores_real, scores_fake, fmaps_real, fmaps_fake = mpd_formula_outputs
    shapes = disc_ref()["mpd_p2_shapes"]
    assert list(scores_real[0].shape) == shapes["score_real"]
    assert list(scores_fake[0].shape) == shapes["score_fake"]
    assert [list(f.shape) for f in fmaps_real[0]] == shapes["fmaps_real"]
    assert [list(f.shape) for f in fmaps_fake[0]] == shapes["fmaps_fake"]


def test_mpd_formula_outputs_match_reference(mpd_formula_outputs: tuple) -> None:
    """Closed-form-weight MPD: scores, all 5×5 fmap stats and the three losses match the reference."""
    scores_real, scores_fake, fmaps_real, fmaps_fake = mpd_formula_outputs
    formula = disc_ref()["mpd_formula"]
    expected = formula["scores_real"] + formula["scores_fake"]
    for ours, theirs in zip(scores_real + scores_fake, expected, strict=True):
        torch.testing.assert_close(ours, theirs, **SCORE_TOL)
    for fmaps, stats in ((fmaps_real, formula["fmap_stats_real"]), (fmaps_fake, formula["fmap_stats_fake"])):
        for maps, map_stats in zip(fmaps, stats, strict=True):
            for fmap, stat in zip(maps, map_stats, strict=True):
                assert_stats_close(fmap, stat)
    assert discriminator_loss(scores_real, scores_fake).item() == pytest.approx(
        formula["disc_loss"], rel=LOSS_RTOL
    )
    assert generator_loss(scores_fake).item() == pytest.approx(formula["gen_loss"], rel=LOSS_RTOL)
    assert feature_matching_loss(fmaps_real, fmaps_fake).item() == pytest.approx(
        formula["fm_loss"], rel=LOSS_RTOL
    )
