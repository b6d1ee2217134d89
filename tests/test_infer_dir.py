"""``python -m flow2gan.bin.infer_dir``: good and bad inputs, resume, overwrite, batching, chunking."""

import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO, TINY_MODEL_ARGS

from flow2gan.audio import load_audio
from flow2gan.bin.common import load_model
from flow2gan.bin.infer_dir import build_parser, main
from flow2gan.vocode import DirVocoder, Job, Summary, VocodeOptions

MODEL_ARGS = TINY_MODEL_ARGS
HOP = 256
GOOD_AUDIO = ["a24.wav", "b16.wav", "c_stereo.wav", "sub/d24.wav"]
GOOD_MEL = {"m.pt": 40, "m2d.pt": 25}
BAD = ["corrupt.wav", "empty.wav", "short.wav", "nan.pt", "bands.pt", "dict.pt"]


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    speech = load_audio(REPO / "test_data/wav/us_male_fox.wav", 24000).numpy()
    (root / "sub").mkdir()
    sf.write(root / "a24.wav", speech[:9000], 24000)
    sf.write(root / "b16.wav", speech[1000:7000], 16000)
    sf.write(root / "c_stereo.wav", np.stack([speech[:7000], 0.5 * speech[500:7500]], axis=1), 24000)
    sf.write(root / "sub/d24.wav", speech[3000:8000], 24000)
    mel = torch.load(REPO / "test_data/mel/us_male_fox.pt", weights_only=True)
    torch.save(mel[..., 10:50].clone(), root / "m.pt")
    torch.save(mel[0, :, :25].clone(), root / "m2d.pt")
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" * 4)
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "short.wav", speech[:10], 24000)
    torch.save(torch.full((1, 100, 30), float("nan")), root / "nan.pt")
    torch.save(mel[:, :80, :30].clone(), root / "bands.pt")
    torch.save({"mel": mel[..., :30]}, root / "dict.pt")
    (root / "notes.txt").write_text("not an input")
    return root


def audio_len_24k(path: Path) -> int:
    return load_audio(path, 24000).shape[0]


def expected_lengths(input_dir: Path) -> dict[str, int]:
    out = {}
    for name in GOOD_AUDIO:
        n = audio_len_24k(input_dir / name)
        out[name.replace(".pt", ".wav")] = n  # from audio: the input's length, batched or not
    for name, frames in GOOD_MEL.items():
        out[name.replace(".pt", ".wav")] = frames * HOP
    return out


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def counts(text: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) written, (\d+) skipped, (\d+) failed", text)
    assert m, text
    return int(m[1]), int(m[2]), int(m[3])


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, tuple[int, int, int]]:
    code = main([*MODEL_ARGS, *args])
    return code, counts(capsys.readouterr().out)


def read_pcm(path: Path) -> np.ndarray:
    return sf.read(path, dtype="int16")[0]


def test_good_bad_resume_overwrite(input_dir, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    base = ["--input-dir", str(input_dir), "--output-dir", str(out), "--recursive", "--seed", "3"]
    with caplog.at_level(logging.INFO):
        code, (written, skipped, failed) = run(capsys, *base)
    assert code == 1
    assert (written, skipped, failed) == (6, 0, 6)
    lengths = expected_lengths(input_dir)
    assert all_files(out) == set(lengths)  # nothing for bad inputs, no temp or partial files
    for name, n in lengths.items():
        info = sf.info(out / name)
        assert (info.frames, info.samplerate, info.channels, info.subtype) == (n, 24000, 1, "PCM_16")
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    for name in BAD:
        assert name in errors
    assert "too short" in errors and "NaN" in errors and "n_mels=100" in errors and "dict" in errors
    assert sum("input audio resampled from 16000 Hz" in r.getMessage() for r in caplog.records) == 1
    assert sum("input audio downmixed from 2 channels" in r.getMessage() for r in caplog.records) == 1
    assert "empty file" in errors

    first = {name: read_pcm(out / name) for name in lengths}
    assert np.abs(first["a24.wav"]).max() > 100  # real signal, not silence
    code, (written, skipped, failed) = run(capsys, *base)
    assert (code, written, skipped, failed) == (1, 0, 6, 6)

    (out / "a24.wav").unlink()
    code, (written, skipped, failed) = run(capsys, *base, "--overwrite", "yes")
    assert (written, skipped, failed) == (6, 0, 6)
    for name in lengths:
        np.testing.assert_array_equal(read_pcm(out / name), first[name])  # same seed, same output
    code, (written, _, _) = run(capsys, *base, "--overwrite", "--seed", "4")
    assert written == 6
    assert not np.array_equal(read_pcm(out / "a24.wav"), first["a24.wav"])


def test_non_recursive_and_only_good_files(input_dir, tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    for name in ["a24.wav", "b16.wav", "m.pt"]:
        (good / name).write_bytes((input_dir / name).read_bytes())
    (good / "sub").mkdir()
    (good / "sub/d24.wav").write_bytes((input_dir / "sub/d24.wav").read_bytes())
    out = tmp_path / "out"
    code, result = run(capsys, "--input-dir", str(good), "--output-dir", str(out))
    assert (code, result) == (0, (3, 0, 0))
    assert all_files(out) == {"a24.wav", "b16.wav", "m.wav"}


def test_batched_lengths(input_dir, tmp_path, capsys):
    single, batched = tmp_path / "single", tmp_path / "batched"
    common = ["--input-dir", str(input_dir), "--recursive"]
    assert run(capsys, *common, "--output-dir", str(single))[1] == (6, 0, 6)
    code, result = run(capsys, *common, "--output-dir", str(batched), "--batch-size", "3")
    assert (code, result) == (1, (6, 0, 6))
    lengths = expected_lengths(input_dir)
    assert all_files(batched) == set(lengths)
    for name, n in lengths.items():
        assert sf.info(batched / name).frames == n
    # The longest mel of its batch has no padding: its output matches the single-file run.
    longest = read_pcm(batched / "m.wav")
    alone = read_pcm(single / "m.wav")
    assert np.abs(longest.astype(int) - alone.astype(int)).max() <= 1


def test_chunked_matches_unchunked(input_dir, tmp_path, capsys):
    plain, chunked = tmp_path / "plain", tmp_path / "chunked"
    common = ["--input-dir", str(input_dir), "--n-timesteps", "2", "--seed", "11"]
    assert run(capsys, *common, "--output-dir", str(plain))[1] == (5, 0, 6)
    assert run(capsys, *common, "--output-dir", str(chunked), "--chunk-size", "7")[1] == (5, 0, 6)
    for name in all_files(plain):
        a = read_pcm(plain / name).astype(np.float64) / 32768
        b = read_pcm(chunked / name).astype(np.float64) / 32768
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-5 + 1 / 32768  # equal up to the 16-bit rounding of ~1e-7 deltas
        assert np.mean(a != b) < 0.01
    # Before 16-bit rounding the two paths agree to 1e-5.
    args = build_parser().parse_args([*MODEL_ARGS, *common, "--output-dir", str(plain), "--chunk-size", "7"])
    model, n_timesteps = load_model(build_parser(), args)
    options = VocodeOptions(n_timesteps=n_timesteps, chunk_size=args.chunk_size, seed=args.seed)
    chunked_vocoder = DirVocoder(model, options, Summary())
    plain_vocoder = DirVocoder(model, replace(options, chunk_size=-1), Summary())
    for name in ["a24.wav", "m.pt"]:
        item = plain_vocoder.load(Job(input_dir / name, Path(name), plain / name))
        with torch.inference_mode():
            a, b = plain_vocoder.vocode_single(item), chunked_vocoder.vocode_single(item)
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-5


def test_name_clash_fails_one(tmp_path, capsys, caplog):
    src = tmp_path / "in"
    src.mkdir()
    mel = torch.load(REPO / "test_data/mel/us_male_fox.pt", weights_only=True)[..., :20].clone()
    torch.save(mel, src / "x.pt")
    sf.write(src / "x.wav", np.zeros(3000, dtype=np.float32), 24000)
    code, result = run(capsys, "--input-dir", str(src), "--output-dir", str(tmp_path / "out"))
    assert (code, result) == (1, (1, 0, 1))
    assert "x.wav" in caplog.text and "already taken by x.pt" in caplog.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hf-model-name", "libritts-mel-4-step", "--n-timesteps", "1"], "fine-tuned for 4 steps"),
        (["--hf-model-name", "no-such-model"], "unknown hf_model_name"),
        ([], "--checkpoint"),
        ([*MODEL_ARGS, "--chunk-size", "5", "--batch-size", "2"], "cannot be combined"),
        ([*MODEL_ARGS, "--n-timesteps", "0"], "n-timesteps"),
    ],
)
def test_usage_errors(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_same_input_and_output_dir_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*MODEL_ARGS, "--input-dir", str(tmp_path), "--output-dir", str(tmp_path)])
    assert "must differ" in capsys.readouterr().err


@pytest.mark.slow
def test_console_entry_point(input_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a24.wav").write_bytes((input_dir / "a24.wav").read_bytes())
    (src / "m.pt").write_bytes((input_dir / "m.pt").read_bytes())
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flow2gan.bin.infer_dir", *MODEL_ARGS, "--input-dir", str(src)]
    start = time.monotonic()
    proc = subprocess.run([*cmd, "--output-dir", str(out)], capture_output=True, text=True, env=env, cwd=REPO)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert counts(proc.stdout) == (2, 0, 0)
    assert all_files(out) == {"a24.wav", "m.wav"}
    assert elapsed < 30
