"""Streaming vocoding equals offline inference for any push pattern; latency, bounded work, bad pushes."""

import random

import pytest
import torch
from conftest import PARITY, REPO

from flow2gan import GeneratorConfig, MelAudioGenerator, get_generator_config, get_model
from flow2gan.audio import load_audio
from flow2gan.bin import stream as stream_cli
from flow2gan.models.token_generator import build_generator
from flow2gan.sampling import chunk_context
from flow2gan.streaming import NOISE_BLOCK_SAMPLES, StreamingVocoder, stream_frames, stream_noise

SMALL_44K = get_generator_config("mel_44k_128band_512x_base").replace(
    channels=(24, 16, 16),
    time_embed_channels=16,
    hidden_factor=2,
    num_layers=(2, 2, 2),
    cond_enc_channels=16,
    cond_enc_hidden_factor=2,
    cond_enc_num_layers=1,
)


def random_model(config: GeneratorConfig) -> MelAudioGenerator:
    """Random weights, perturbed like the parity fixture so every layer matters (output of order 1)."""
    model = build_generator(config).eval()
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if name == "weight" and isinstance(module, torch.nn.Conv1d | torch.nn.Linear):
                    p.add_(0.5 / p[0].numel() ** 0.5 * torch.randn_like(p))
                else:
                    p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tiny() -> MelAudioGenerator:
    model, _ = get_model(model_name=str(PARITY / "tiny_24k_config.json"), checkpoint=PARITY / "tiny_24k.pt")
    return model


@pytest.fixture(scope="module")
def models(tiny) -> dict[str, MelAudioGenerator]:
    torch.manual_seed(0)
    return {
        "tiny": tiny,
        "small": random_model(get_generator_config("mel_24k_small")),
        "44k": random_model(SMALL_44K),
        "envelope": random_model(get_generator_config("mel_24k_small_envelope")),
    }


@pytest.fixture(scope="module")
def real_mel() -> torch.Tensor:
    return torch.load(REPO / "test_data/mel/us_male_fox.pt", weights_only=True)


def mel_for(model: MelAudioGenerator, real_mel: torch.Tensor, n_frames: int) -> torch.Tensor:
    """The real 100-band mel, or a plausible random log-mel for other band counts: (1, n_mels, n_frames)."""
    if model.config.n_mels == real_mel.shape[1]:
        return real_mel[..., :n_frames]
    return 1.5 * torch.randn(1, model.config.n_mels, n_frames) - 6.0


def push_sizes(pattern: str, n_frames: int) -> list[int]:
    if pattern == "one":
        return [1] * n_frames
    if pattern == "all":
        return [n_frames]
    rng = random.Random(n_frames)
    sizes = []
    while sum(sizes) < n_frames:
        sizes.append(min(rng.choice([0, 1, 2, 3, 7, 13, 30]), n_frames - sum(sizes)))
    return sizes


def run_stream(stream: StreamingVocoder, mel: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    outs, start = [], 0
    for size in sizes:
        outs.append(stream.push(mel[..., start : start + size]))
        start += size
    outs.append(stream.flush())
    return outs


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", ["tiny", "small", "44k", "envelope"])
@pytest.mark.parametrize("n_timesteps", [1, 2, 4])
@pytest.mark.parametrize("pattern", ["one", "random", "all"])
def test_stream_equals_offline(models, real_mel, name, n_timesteps, pattern):
    model = models[name]
    context = chunk_context(model.config, n_timesteps)
    n_frames = 2 * context + 17  # interior chunks exist for every step count
    mel = mel_for(model, real_mel, n_frames)
    stream = StreamingVocoder(model, n_timesteps=n_timesteps, chunk_size=6 if pattern == "one" else 9, seed=3)
    out = torch.cat(run_stream(stream, mel, push_sizes(pattern, n_frames)), dim=-1)
    with torch.inference_mode():
        ref = model.infer(mel, noise=stream.start_noise, n_timesteps=n_timesteps)
    assert out.shape == ref.shape == (1, n_frames * model.config.mel_hop_length)
    assert ref.abs().max() > 0.05
    assert max_diff(out, ref) <= 1e-5


def test_latency_matches_receptive_field(tiny, real_mel):
    for n in (1, 2, 4):
        stream = StreamingVocoder(tiny, n_timesteps=n, chunk_size=4)
        assert stream.lookahead_frames == chunk_context(tiny.config, n) == {1: 8, 2: 15, 4: 29}[n]
        assert stream.lookahead_ms == pytest.approx(1000 * stream.lookahead_frames * 256 / 24000)
        assert stream.latency_frames == stream.lookahead_frames + 3
    stream = StreamingVocoder(tiny, n_timesteps=1, chunk_size=1)
    emitted = [stream.push(real_mel[..., f : f + 1]).shape[-1] for f in range(20)]
    assert emitted == [0] * 8 + [256] * 12  # frame f is final once frame f + 8 has been pushed
    chunked = StreamingVocoder(tiny, n_timesteps=1, chunk_size=5)
    emitted = [chunked.push(real_mel[..., f : f + 1]).shape[-1] for f in range(20)]
    assert emitted == [0] * 12 + [5 * 256] + [0] * 4 + [5 * 256] + [0] * 2


def test_lookahead_is_needed(tiny, real_mel):
    # Offline inference of a prefix agrees with the full utterance up to `lookahead` frames before its
    # end, and not beyond: the audio of the last `lookahead` frames is not final yet.
    mel = real_mel[..., :60]
    lookahead = chunk_context(tiny.config, 1)
    noise = stream_noise(0, 1, 0, 60 * 256, 0.1)
    with torch.inference_mode():
        full = tiny.infer(mel, n_timesteps=1, noise=noise)
        prefix = tiny.infer(mel[..., :40], n_timesteps=1, noise=noise[:, : 40 * 256])
    final = (40 - lookahead) * 256
    assert max_diff(prefix[:, :final], full[:, :final]) < 1e-6
    assert max_diff(prefix[:, final : final + 256], full[:, final : final + 256]) > 1e-6  # rounding: 6e-8
    assert max_diff(prefix[:, final:], full[:, final : 40 * 256]) > 1e-2


def test_noise_is_incremental():
    whole = stream_noise(7, 2, 0, 3 * NOISE_BLOCK_SAMPLES + 5, 0.1)
    part = stream_noise(7, 2, NOISE_BLOCK_SAMPLES - 3, 2 * NOISE_BLOCK_SAMPLES + 9, 0.1)
    assert torch.equal(part, whole[:, NOISE_BLOCK_SAMPLES - 3 : 2 * NOISE_BLOCK_SAMPLES + 9])
    assert whole.shape == (2, 3 * NOISE_BLOCK_SAMPLES + 5)
    assert whole.std().item() == pytest.approx(0.1, rel=0.02)
    assert not torch.equal(stream_noise(8, 2, 0, 100, 0.1), whole[:, :100])
    with pytest.raises(ValueError, match="start <= end"):
        stream_noise(0, 1, 10, 5, 0.1)


def test_noise_independent_of_length_and_chunking(tiny, real_mel):
    short = StreamingVocoder(tiny, n_timesteps=1, chunk_size=3, seed=11)
    run_stream(short, real_mel[..., :50], [50])
    long = StreamingVocoder(tiny, n_timesteps=1, chunk_size=20, seed=11)
    long_out = torch.cat(run_stream(long, real_mel[..., :120], push_sizes("random", 120)), dim=-1)
    assert torch.equal(long.start_noise[:, : 50 * 256], short.start_noise)
    # The same seed gives the same audio whatever the chunk size (up to float rounding).
    other = StreamingVocoder(tiny, n_timesteps=1, chunk_size=7, seed=11)
    assert max_diff(torch.cat(run_stream(other, real_mel[..., :120], [120]), dim=-1), long_out) <= 1e-5


def test_batch_of_streams(tiny, real_mel):
    mel = torch.cat([real_mel[..., :70], 1.5 * torch.randn(1, 100, 70) - 6.0])
    stream = StreamingVocoder(tiny, n_timesteps=2, chunk_size=4, seed=1, clamp_pred=True)
    out = torch.cat(run_stream(stream, mel, push_sizes("random", 70)), dim=-1)
    with torch.inference_mode():
        ref = tiny.infer(mel, noise=stream.start_noise, n_timesteps=2, clamp_pred=True)
    assert out.shape == (2, 70 * 256)
    assert max_diff(out, ref) <= 1e-5
    mixed = StreamingVocoder(tiny, n_timesteps=1)
    mixed.push(mel[..., :3])
    with pytest.raises(ValueError, match="batch size 2"):
        mixed.push(mel[:1, :, 3:5])


def test_work_per_chunk_is_bounded(tiny, real_mel, monkeypatch):
    seen = []
    encode = tiny.encode_cond

    def spy(mel: torch.Tensor, check: bool = True) -> torch.Tensor:
        seen.append(mel.shape[-1])
        return encode(mel, check)

    monkeypatch.setattr(tiny, "encode_cond", spy)
    stream = StreamingVocoder(tiny, n_timesteps=2, chunk_size=10)
    run_stream(stream, real_mel, push_sizes("one", real_mel.shape[-1]))
    context = stream.lookahead_frames
    assert len(seen) == -(-real_mel.shape[-1] // 10)
    assert max(seen) == 10 + 2 * context < real_mel.shape[-1]
    assert stream._cond.shape[-1] <= 10 + 2 * context


def bad_pushes(n_frames: int) -> dict[str, torch.Tensor]:
    good = torch.randn(1, 100, n_frames) - 5.0
    nan = good.clone()
    nan[0, 3, -1] = float("nan")
    return {"bands": good[:, :80], "nan": nan, "inf": nan.nan_to_num(nan=float("inf")), "rank": good[0, 0]}


def first_words(error: BaseException) -> str:
    """The message without its numbers and shapes: "mel has ... bands but ..." -> "bands but"."""
    return " ".join(w for w in str(error).split("(")[0].split() if not any(c.isdigit() for c in w))


@pytest.mark.parametrize("kind", ["bands", "nan", "inf", "rank"])
def test_bad_push_raises_like_infer(tiny, real_mel, kind):
    with pytest.raises(Exception) as offline, torch.inference_mode():
        tiny.infer(bad_pushes(40)[kind], n_timesteps=1)
    stream = StreamingVocoder(tiny, n_timesteps=1, chunk_size=4)
    outs = [stream.push(real_mel[..., :20])]
    with pytest.raises(type(offline.value)) as streamed:
        stream.push(bad_pushes(2)[kind])
    assert first_words(streamed.value) == first_words(offline.value)
    # A rejected push leaves the stream unchanged: it goes on and still matches offline.
    assert stream.frames == 20
    out = torch.cat(outs + run_stream(stream, real_mel[..., 20:40], [5, 15]), dim=-1)
    with torch.inference_mode():
        ref = tiny.infer(real_mel[..., :40], noise=stream.start_noise, n_timesteps=1)
    assert max_diff(out, ref) <= 1e-5


def test_stream_errors(tiny, real_mel):
    with pytest.raises(ValueError, match="chunk_size"):
        StreamingVocoder(tiny, chunk_size=0)
    with pytest.raises(ValueError, match="n_timesteps"):
        StreamingVocoder(tiny, n_timesteps=0)
    short = StreamingVocoder(tiny, n_timesteps=1)
    short.push(real_mel[..., :1])
    with pytest.raises(ValueError, match="at least 2"):
        short.flush()
    with pytest.raises(ValueError, match="nothing was pushed"):
        StreamingVocoder(tiny, n_timesteps=1).flush()
    done = StreamingVocoder(tiny, n_timesteps=1)
    done.push(real_mel[..., :5])
    assert done.flush().shape == (1, 5 * 256)
    with pytest.raises(RuntimeError, match="flushed"):
        done.push(real_mel[..., :5])
    with pytest.raises(RuntimeError, match="nothing has been pushed"):
        _ = StreamingVocoder(tiny).start_noise


def test_stream_frames_timing(tiny, real_mel):
    stream = StreamingVocoder(tiny, n_timesteps=1, chunk_size=8, seed=2)
    audio, timing = stream_frames(stream, real_mel[0, :, :50], frames_per_push=3)
    with torch.inference_mode():
        ref = tiny.infer(real_mel[..., :50], noise=stream.start_noise, n_timesteps=1)
    assert max_diff(audio, ref) <= 1e-5
    assert 0 < timing.time_to_first_audio_s <= timing.elapsed_s
    assert timing.audio_s == pytest.approx(50 * 256 / 24000)
    assert timing.rtf * timing.xrt == pytest.approx(1.0)
    with pytest.raises(ValueError, match="frames_per_push"):
        stream_frames(StreamingVocoder(tiny), real_mel, 0)


def test_stream_cli(tmp_path, real_mel, capsys):
    mel_path = tmp_path / "in.pt"
    torch.save(real_mel[..., :60].clone(), mel_path)
    ckpt = ["--model-name", str(PARITY / "tiny_24k_config.json"), "--checkpoint", str(PARITY / "tiny_24k.pt")]
    args = [
        "--input",
        str(mel_path),
        "--output",
        str(tmp_path / "out.wav"),
        "--n-timesteps",
        "2",
        "--seed",
        "4",
    ]
    assert stream_cli.main([*args, *ckpt, "--chunk-size", "5", "--frames-per-push", "2"]) == 0
    printed = capsys.readouterr().out
    assert (
        "time to first audio" in printed and "RTF" in printed and "look-ahead 15 frames (160 ms)" in printed
    )
    wav = load_audio(tmp_path / "out.wav")
    model, _ = get_model(model_name=str(PARITY / "tiny_24k_config.json"), checkpoint=PARITY / "tiny_24k.pt")
    noise = stream_noise(4, 1, 0, 60 * 256, model.config.init_noise_scale)
    with torch.inference_mode():
        ref = model.infer(real_mel[..., :60], noise=noise, n_timesteps=2, clamp_pred=True)[0]
    assert wav.shape == ref.shape
    assert max_diff(wav, ref) <= 1.5 / 32767  # 16-bit PCM
    audio_args = ["--input", str(tmp_path / "out.wav"), "--output", str(tmp_path / "again.wav")]
    assert stream_cli.main([*audio_args, *ckpt, "--n-timesteps", "1"]) == 0
    assert load_audio(tmp_path / "again.wav").shape == (61 * 256,)
    with pytest.raises(SystemExit):
        stream_cli.main([*args, *ckpt, "--chunk-size", "0"])


def test_token_model_streams():
    torch.manual_seed(0)
    config = get_generator_config("encodec_24k_small").replace(num_layers=(1, 1, 1), cond_enc_num_layers=1)
    model = random_model(config)
    with torch.no_grad():
        model.code_embedding.load_codebooks(
            torch.randn(config.max_codebooks, config.codebook_size, config.n_mels)
        )
    codes = torch.randint(0, config.codebook_size, (1, 4, 40))  # 4 codebooks: 3 kbps
    stream = StreamingVocoder(model, n_timesteps=2, chunk_size=5, seed=9)
    assert stream.lookahead_frames == chunk_context(config, 2)
    out = torch.cat(run_stream(stream, codes, push_sizes("random", 40)), dim=-1)
    with torch.inference_mode():
        ref = model.infer(codes, noise=stream.start_noise, n_timesteps=2)
    assert out.shape == ref.shape == (1, 40 * 320)
    assert stream.start_noise.dtype == torch.float32
    assert max_diff(out, ref) <= 1e-5 * max(1.0, ref.abs().max().item())
    with pytest.raises(ValueError, match="integer"):
        StreamingVocoder(model, n_timesteps=2).push(codes[..., :1].float())


def test_readme_latency_table():
    rows = [
        ln
        for ln in (REPO / "README.md").read_text().splitlines()
        if " frames, " in ln and ln.startswith("| `")
    ]
    assert len(rows) == 4
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        config = get_generator_config(cells[0].split("`")[1])
        for n, cell in zip((1, 2, 4), cells[1:], strict=True):
            frames = chunk_context(config, n)
            ms = 1000 * frames * config.mel_hop_length / config.sampling_rate
            assert cell == f"{frames} frames, {ms:.0f} ms"
