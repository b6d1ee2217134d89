"""Token-conditioned generator: EnCodec front-end, code embedding, checkpoints, get_model, input errors."""

import json

import pytest
import torch

from flow2gan import get_generator_config, get_model
from flow2gan.codec import BANDWIDTHS, EncodecTokenizer, check_bandwidth
from flow2gan.config import TokenGeneratorConfig
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import TokenAudioGenerator


@pytest.fixture(scope="module")
def tokenizer(codec_dir) -> EncodecTokenizer:
    return EncodecTokenizer(codec_dir)


@pytest.fixture(scope="module")
def model(tokenizer) -> TokenAudioGenerator:
    torch.manual_seed(0)
    gen = TokenAudioGenerator(get_generator_config("encodec_24k_small"))
    gen.code_embedding.load_codebooks(tokenizer.codebooks())
    return gen.eval()


def speech_like(n: int, batch: int = 2) -> torch.Tensor:
    t = torch.arange(n) / 24000
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (150.0, 220.0)][:batch])
    return 0.3 * tones * (1 + torch.sin(2 * torch.pi * 3 * t))


def test_tokenizer_shapes_and_prefix_property(tokenizer):
    audio = speech_like(24000 + 100)
    codes = {b: tokenizer.encode(audio, b) for b in BANDWIDTHS}
    for b, n_q in zip(BANDWIDTHS, (2, 4, 8, 16), strict=True):
        assert codes[b].shape == (2, n_q, 76)  # ceil(24100 / 320) frames at 75 Hz
        assert codes[b].dtype == torch.int64
        assert torch.equal(codes[b], codes[12.0][:, :n_q])  # residual VQ: lower bandwidths are a prefix
    assert codes[12.0][:, 0].unique().numel() > 4  # a random but non-degenerate codec
    assert tokenizer.codebooks().shape == (16, 1024, 128)
    assert tokenizer.decode(codes[6.0]).shape == (2, 76 * 320)
    with pytest.raises(ValueError, match="unsupported bandwidth 24"):
        tokenizer.encode(audio, 24.0)
    assert check_bandwidth("6") == 6.0


def test_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        EncodecTokenizer(tmp_path)


def test_configs_keep_the_mel_ratios():
    for name, mel in (("encodec_24k_base", "mel_24k_base"), ("encodec_24k_small", "mel_24k_small")):
        cfg, mel_cfg = get_generator_config(name), get_generator_config(mel)
        assert isinstance(cfg, TokenGeneratorConfig)
        assert cfg.mel_hop_length == 320 and cfg.frame_rate == 75
        assert [320 // h for h in cfg.hop_lengths] == [256 // h for h in mel_cfg.hop_lengths] == [1, 2, 4]
        assert [n / h for n, h in zip(cfg.n_ffts, cfg.hop_lengths, strict=True)] == [2.0, 2.0, 2.0]
        assert [cfg.n_codebooks(b) for b in cfg.bandwidths] == [2, 4, 8, 16]
        assert (cfg.channels, cfg.num_layers) == (mel_cfg.channels, mel_cfg.num_layers)


def test_token_model_adds_only_the_code_front_end():
    with torch.device("meta"):
        mel = MelAudioGenerator(get_generator_config("mel_24k_base"))
        tok = TokenAudioGenerator(get_generator_config("encodec_24k_base"))
    mel_keys, tok_keys = set(mel.state_dict()), set(tok.state_dict())
    added = {
        "code_embedding.codebooks",
        "code_embedding.codebook_scale",
        "code_embedding.bandwidth_embed.weight",
    }
    assert tok_keys - mel_keys == added and mel_keys == tok_keys - added
    assert tok.state_dict()["code_embedding.codebooks"].shape == (16, 1024, 128)


def test_code_embedding_sums_codebook_vectors(model):
    codes = torch.randint(0, 1024, (2, 4, 9))
    emb = model.code_embedding(codes)
    books = model.code_embedding.codebooks
    scale = books.square().mean().sqrt()
    assert model.code_embedding.codebook_scale == scale
    expected = (
        sum(books[q][codes[:, q]] for q in range(4)) / scale + model.code_embedding.bandwidth_embed.weight[1]
    )
    torch.testing.assert_close(emb, expected.transpose(1, 2))


def test_checkpoint_round_trip_and_infer(model, tokenizer, tmp_path):
    path = tmp_path / "tok.pt"
    torch.save({"model": model.state_dict()}, path)
    loaded, cfg = get_model(model_name="encodec_24k_small", checkpoint=path)
    assert isinstance(loaded, TokenAudioGenerator) and not loaded.training
    assert cfg == get_generator_config("encodec_24k_small")
    torch.testing.assert_close(loaded.code_embedding.codebooks, tokenizer.codebooks(), rtol=0, atol=0)
    codes = tokenizer.encode(speech_like(12000), 6.0)
    noise = 0.1 * torch.randn(2, codes.shape[-1] * 320)
    with torch.inference_mode():
        out = loaded.infer(cond=codes, bandwidth=6.0, n_timesteps=2, clamp_pred=True, noise=noise)
        ref = model.infer(cond=codes, n_timesteps=2, clamp_pred=True, noise=noise)
        single = loaded.infer(cond=codes[0], n_timesteps=2, clamp_pred=True, noise=noise[:1])
    assert out.shape == (2, codes.shape[-1] * 320)
    assert torch.isfinite(out).all() and out.abs().max() <= 1
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(single, out[:1])
    with pytest.raises(ValueError, match="checkpoint does not match"):
        get_model(model_name="mel_24k_small", checkpoint=path)


def test_bandwidth_changes_the_output(model):
    codes = torch.randint(0, 1024, (1, 16, 20))
    noise = 0.1 * torch.randn(1, 20 * 320)
    with torch.inference_mode():
        outs = [model.infer(codes[:, : 2**k], n_timesteps=1, noise=noise) for k in range(1, 5)]
    for a, b in zip(outs, outs[1:], strict=False):
        assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    ("codes", "kwargs", "message"),
    [
        (torch.zeros(8, dtype=torch.long), {}, "shape"),
        (torch.zeros(1, 1, 8, 10, dtype=torch.long), {}, "shape"),
        (torch.zeros(1, 8, 10), {}, "integer"),
        (torch.full((1, 8, 10), 1024), {}, "codebook index 1024 out of range"),
        (torch.full((1, 8, 10), -1), {}, "codebook index -1 out of range"),
        (torch.zeros(1, 3, 10, dtype=torch.long), {}, "3 codebooks"),
        (torch.zeros(1, 8, 10, dtype=torch.long), {"bandwidth": 24.0}, "unsupported bandwidth 24"),
        (torch.zeros(1, 8, 10, dtype=torch.long), {"bandwidth": 3.0}, "3.0 kbps uses 4 codebooks"),
        (torch.zeros(1, 8, 1, dtype=torch.long), {}, "at least 2"),
    ],
)
def test_bad_codes_are_rejected(model, codes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.infer(codes, n_timesteps=1, **kwargs)


def test_json_token_config(tmp_path):
    path = tmp_path / "tok.json"
    cfg = get_generator_config("encodec_24k_small")
    path.write_text(json.dumps({"config": cfg.to_dict()}))
    assert get_generator_config(str(path)) == cfg
    with pytest.raises(ValueError, match="codebook_dim"):
        cfg.replace(n_mels=100)
