"""Token models in the tools: infer_dir resynthesis and code files, chunked inference, ONNX export."""

from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import REPO

from flow2gan import get_generator_config, get_model
from flow2gan.audio import load_audio
from flow2gan.bin.infer_dir import main as infer_dir
from flow2gan.codec import EncodecTokenizer
from flow2gan.models.token_generator import TokenAudioGenerator

MODEL = "encodec_24k_small"


@pytest.fixture(scope="module")
def checkpoint(codec_dir, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = TokenAudioGenerator(get_generator_config(MODEL))
    model.code_embedding.load_codebooks(EncodecTokenizer(codec_dir).codebooks())
    path = tmp_path_factory.mktemp("token_ckpt") / "tok.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("token_inputs")
    speech = load_audio(REPO / "test_data/wav/us_male_fox.wav", 24000).numpy()
    sf.write(root / "a.wav", speech[:9000], 24000)
    sf.write(root / "b16.wav", speech[2000:8000], 16000)
    torch.save(torch.randint(0, 1024, (8, 20)), root / "codes2d.pt")
    torch.save(torch.randint(0, 1024, (1, 4, 12)), root / "codes3d.pt")
    torch.save(torch.full((8, 20), 2000), root / "bad_index.pt")
    torch.save(torch.zeros(3, 20, dtype=torch.long), root / "bad_nq.pt")
    return root


def run(checkpoint: Path, inputs: Path, out: Path, *extra: str) -> int:
    flags = ["--checkpoint", str(checkpoint), "--model-name", MODEL, "--device", "cpu", "--n-timesteps", "2"]
    return infer_dir([*flags, "--input-dir", str(inputs), "--output-dir", str(out), *extra])


def test_infer_dir_resynthesis_and_code_files(checkpoint, inputs, codec_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(checkpoint, inputs, out, "--codec", str(codec_dir), "--input-type", "audio") == 1
    report = capsys.readouterr().out
    assert "4 written" in report and "2 failed" in report
    assert "bad_index.pt: codebook index 2000 out of range" in report
    assert "bad_nq.pt: codes have 3 codebooks" in report
    assert sf.info(out / "a.wav").frames == 9000  # from audio: the input's length (29 code frames made)
    assert sf.info(out / "b16.wav").frames == 9000  # 6000 samples at 16 kHz = 9000 at 24 kHz
    assert sf.info(out / "codes2d.wav").frames == 20 * 320
    assert sf.info(out / "codes3d.wav").frames == 12 * 320
    # the same files again in batches, and chunked: code files vocode identically
    batched, chunked = tmp_path / "batched", tmp_path / "chunked"
    assert run(checkpoint, inputs, batched, "--codec", str(codec_dir), "--batch-size", "2") == 1
    assert run(checkpoint, inputs, chunked, "--codec", str(codec_dir), "--chunk-size", "5") == 1
    for name in ("a.wav", "codes2d.wav"):
        ref = sf.read(out / name)[0]
        assert abs(sf.read(chunked / name)[0] - ref).max() <= 1 / 2**15
    assert abs(sf.read(batched / "codes3d.wav")[0] - sf.read(out / "codes3d.wav")[0]).max() <= 1 / 2**15


def test_infer_dir_token_model_without_codec(checkpoint, inputs, tmp_path, capsys):
    assert run(checkpoint, inputs, tmp_path / "out", "--bandwidth", "6") == 1
    report = capsys.readouterr().out
    assert "a.wav: audio input to a token model needs --codec" in report
    assert "codes3d.pt: bandwidth 6.0 kbps uses 8 codebooks, the codes have 4" in report
    assert (tmp_path / "out" / "codes2d.wav").is_file()


def test_infer_dir_codec_rejected_for_mel_model(codec_dir, inputs, tmp_path):
    from conftest import TINY_MODEL_ARGS

    flags = TINY_MODEL_ARGS[:4]
    with pytest.raises(SystemExit):
        infer_dir(
            [*flags, "--input-dir", str(inputs), "--output-dir", str(tmp_path), "--codec", str(codec_dir)]
        )


def test_chunked_equals_offline(checkpoint):
    model, _ = get_model(model_name=MODEL, checkpoint=checkpoint)
    codes = torch.randint(0, 1024, (2, 16, 70))
    noise = 0.1 * torch.randn(2, 70 * 320)
    with torch.inference_mode():
        full = model.infer(codes, n_timesteps=2, noise=noise, clamp_pred=True)
        chunked = model.infer_chunked(codes, chunk_size=16, n_timesteps=2, noise=noise, clamp_pred=True)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_onnx_export_takes_codes(checkpoint, tmp_path):
    import numpy as np

    from flow2gan.bin import export as export_cli
    from flow2gan.onnx import OnnxVocoder

    path = tmp_path / "tok.onnx"
    assert (
        export_cli.main(
            [
                "--checkpoint",
                str(checkpoint),
                "--model-name",
                MODEL,
                "--n-timesteps",
                "1",
                "--output",
                str(path),
            ]
        )
        == 0
    )
    model, _ = get_model(model_name=MODEL, checkpoint=checkpoint)
    vocoder = OnnxVocoder(path, threads=1)
    for batch, n_q, frames in ((1, 2, 9), (2, 16, 13)):
        codes, noise = torch.randint(0, 1024, (batch, n_q, frames)), 0.1 * torch.randn(batch, frames * 320)
        with torch.inference_mode():
            ref = model.infer(codes, n_timesteps=1, noise=noise, clamp_pred=True)
        out = vocoder.infer(codes.numpy(), noise.numpy())
        assert out.shape == (batch, frames * 320) and np.abs(out - ref.numpy()).max() <= 1e-4
    assert vocoder.infer(codes[0].numpy(), seed=1).shape == (1, frames * 320)
    with pytest.raises(ValueError, match="codes must be integers"):
        vocoder.infer(codes.float().numpy())


def test_streaming_codes_equal_offline(checkpoint):
    from flow2gan.streaming import StreamingVocoder, stream_noise

    model, _ = get_model(model_name=MODEL, checkpoint=checkpoint)
    codes = torch.randint(0, 1024, (1, 8, 40))
    stream = StreamingVocoder(model, n_timesteps=2, chunk_size=8)
    pieces = [stream.push(codes[..., i : i + 5]) for i in range(0, 40, 5)] + [stream.flush()]
    with torch.inference_mode():
        ref = model.infer(codes, n_timesteps=2, noise=stream_noise(0, 1, 0, 40 * 320, 0.1))
    torch.testing.assert_close(torch.cat(pieces, dim=-1), ref, rtol=0, atol=1e-5)
