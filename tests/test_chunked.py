"""Chunked inference equals offline inference; the receptive-field arithmetic and its tightness."""

import pytest
import torch
from conftest import PARITY, REPO

from flow2gan import GeneratorConfig, MelAudioGenerator, get_generator_config, get_model
from flow2gan.sampling import (
    chunk_bounds,
    chunk_context,
    encoder_reach,
    infer_chunked,
    receptive_field_samples,
)

TINY_CONFIG = PARITY / "tiny_24k_config.json"
TINY_CKPT = PARITY / "tiny_24k.pt"


@pytest.fixture(scope="module")
def tiny() -> MelAudioGenerator:
    model, _ = get_model(model_name=str(TINY_CONFIG), checkpoint=TINY_CKPT)
    return model


@pytest.fixture(scope="module")
def real_mel() -> torch.Tensor:
    return torch.load(REPO / "test_data/mel/us_male_fox.pt", weights_only=True)[..., :190]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_receptive_field_by_hand():
    # Tiny config: encoder reach 1 + 1 * (7 // 2) = 4 mel frames; each branch has 2 blocks of kernel 7.
    # Step 1, branch 0 (hop 256, n_fft 512, x1): STFT 1 + 2*3 = 7 bad frames, condition 4 + 1 + 1*3 = 8
    #   -> 8 frames -> 7 * 256 + 256 = 2048 samples (branches 1/2: 12 and 20 frames -> 1536 / 1280).
    # Step 2, branch 0: STFT ceil((2048 + 256) / 256) + 6 = 15 frames -> 3840 samples.
    # Steps 3/4: ceil(4096 / 256) + 6 = 22 frames -> 5632; ceil(5888 / 256) + 6 = 29 -> 7424.
    cfg = get_generator_config(str(TINY_CONFIG))
    assert encoder_reach(cfg) == 4
    assert [receptive_field_samples(cfg, n) for n in (1, 2, 3, 4)] == [2048, 3840, 5632, 7424]
    assert [chunk_context(cfg, n) for n in (1, 2, 4)] == [8, 15, 29]
    # mel_24k_base, one step: encoder reach 1 + 4 * 3 = 13; branch 0 condition 13 + 1 + 7 * 3 = 35 frames.
    base = get_generator_config("mel_24k_base")
    assert encoder_reach(base) == 13
    assert receptive_field_samples(base, 1) == 34 * 256 + 256
    assert chunk_context(base, 1) == 35
    assert encoder_reach(base.replace(use_cond_encoder=False)) == 0
    assert base.min_mel_frames == 2
    assert get_generator_config("mel_44k_128band_512x_base").min_mel_frames == 2


def test_chunk_bounds_cover_once():
    bounds = chunk_bounds(23, 5, 3)
    assert bounds[0] == (0, 8, 0, 5)
    assert bounds[-1] == (17, 23, 20, 23)
    kept = [f for _, _, a, b in bounds for f in range(a, b)]
    assert kept == list(range(23))
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_bounds(10, 0, 3)


@pytest.mark.parametrize("n_timesteps", [1, 2, 4])
@pytest.mark.parametrize("chunk_size", [40, 57])
def test_chunked_equals_offline(tiny, real_mel, n_timesteps, chunk_size):
    mel = real_mel[..., : 160 if n_timesteps == 4 else 190]
    noise = 0.1 * torch.randn(1, mel.shape[-1] * 256)
    with torch.inference_mode():
        ref = tiny.infer(mel, n_timesteps=n_timesteps, noise=noise)
        out = infer_chunked(tiny, mel, chunk_size, n_timesteps=n_timesteps, noise=noise)
    assert out.shape == ref.shape == (1, mel.shape[-1] * 256)
    assert max_diff(out, ref) <= 1e-5


def test_model_method_draws_the_same_noise(tiny, real_mel):
    with torch.inference_mode():
        ref = tiny.infer(real_mel, n_timesteps=2, generator=torch.Generator().manual_seed(5))
        out = tiny.infer_chunked(real_mel, 33, n_timesteps=2, generator=torch.Generator().manual_seed(5))
    assert max_diff(out, ref) <= 1e-5


def test_chunked_batch_generator_and_clamp(tiny, real_mel):
    mel = torch.cat([real_mel[..., :150], 1.5 * torch.randn(1, 100, 150) - 6.0])
    with torch.inference_mode():
        ref = tiny.infer(mel, n_timesteps=2, clamp_pred=True, generator=torch.Generator().manual_seed(7))
        out = infer_chunked(tiny, mel, 33, 2, clamp_pred=True, generator=torch.Generator().manual_seed(7))
        whole = infer_chunked(tiny, mel, 1000, 2, clamp_pred=True, generator=torch.Generator().manual_seed(7))
    assert out.shape == (2, 150 * 256)
    assert max_diff(out, ref) <= 1e-5
    assert max_diff(whole, ref) <= 1e-5
    assert out.abs().max() <= 1.0


def test_single_frame_chunks(tiny, real_mel):
    mel = real_mel[..., :30]
    noise = 0.1 * torch.randn(1, 30 * 256)
    with torch.inference_mode():
        ref = tiny.infer(mel, n_timesteps=1, noise=noise)
        out = infer_chunked(tiny, mel, 1, n_timesteps=1, noise=noise)
    assert max_diff(out, ref) <= 1e-5


def test_too_small_context_is_not_exact(tiny, real_mel):
    mel = real_mel[..., :120]
    noise = 0.1 * torch.randn(1, 120 * 256)
    context = chunk_context(tiny.config, 1)
    with torch.inference_mode():
        ref = tiny.infer(mel, n_timesteps=1, noise=noise)
        exact = infer_chunked(tiny, mel, 40, 1, noise=noise, context=context)
        one_short = infer_chunked(tiny, mel, 40, 1, noise=noise, context=context - 1)
        two_short = infer_chunked(tiny, mel, 40, 1, noise=noise, context=context - 2)
    assert max_diff(exact, ref) < 1e-6
    assert max_diff(one_short, ref) > 2e-6  # the bound is tight: one frame less is measurably off
    assert max_diff(two_short, ref) > 1e-4


def test_general_config_exact():
    cfg = GeneratorConfig(
        n_ffts=(1024, 256),
        hop_lengths=(256, 64),
        channels=(16, 12),
        time_embed_channels=16,
        hidden_factor=2,
        conv_kernel_sizes=(5, 9),
        num_layers=(2, 3),
        cond_enc_channels=16,
        cond_enc_hidden_factor=2,
        cond_enc_conv_kernel_size=3,
        cond_enc_num_layers=2,
    )
    model = MelAudioGenerator(cfg).eval()
    for p in model.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    mel = torch.randn(1, 100, 120) - 5.0
    noise = 0.1 * torch.randn(1, 120 * 256)
    with torch.inference_mode():
        ref = model.infer(mel, n_timesteps=2, noise=noise)
        out = infer_chunked(model, mel, 25, 2, noise=noise)
        short = infer_chunked(model, mel, 25, 2, noise=noise, context=chunk_context(cfg, 1) - 2)
    assert max_diff(out, ref) <= 1e-5 * ref.abs().max().item()
    assert max_diff(short, ref) > 1e-3 * ref.abs().max().item()


def test_activation_length_bounded_by_chunk(tiny, real_mel, monkeypatch):
    seen = []
    encode = tiny.encode_cond

    def spy(mel: torch.Tensor) -> torch.Tensor:
        seen.append(mel.shape[-1])
        return encode(mel)

    monkeypatch.setattr(tiny, "encode_cond", spy)
    with torch.inference_mode():
        infer_chunked(tiny, real_mel, 20, 1)
    context = chunk_context(tiny.config, 1)
    assert len(seen) == 10
    assert max(seen) == 20 + 2 * context < real_mel.shape[-1]


def test_bad_arguments(tiny, real_mel):
    with pytest.raises(ValueError, match="noise must have shape"):
        infer_chunked(tiny, real_mel, 20, 1, noise=torch.zeros(1, 10))
    with pytest.raises(ValueError, match="n_timesteps"):
        infer_chunked(tiny, real_mel, 20, 0)
    with pytest.raises(ValueError, match="at least 2"):
        infer_chunked(tiny, real_mel[..., :1], 20, 1)
    with pytest.raises(ValueError, match="bands"):
        infer_chunked(tiny, real_mel[:, :80], 20, 1)
