"""``infer_dir`` on the files users have: NumPy mels, folders with nothing to vocode, output lengths."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO, TINY_MODEL_ARGS

from flow2gan.audio import load_audio
from flow2gan.bin.infer_dir import main

MODEL_ARGS = TINY_MODEL_ARGS
HOP = 256


@pytest.fixture(scope="module")
def mel() -> torch.Tensor:
    return torch.load(REPO / "test_data/mel/us_male_fox.pt", weights_only=True)[..., :30].clone()


def run(src: Path, out: Path, *extra: str) -> int:
    return main([*MODEL_ARGS, "--input-dir", str(src), "--output-dir", str(out), *extra])


def test_numpy_mels_are_vocoded_and_checked(tmp_path, mel, capsys):
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "a.npy", mel.numpy())  # (1, 100, 30) float32
    np.save(src / "b.npy", mel[0, :, :20].double().numpy())  # (100, 20) float64
    np.save(src / "bands.npy", mel[:, :80].numpy())
    np.save(src / "objects.npy", np.array([{"mel": 1}], dtype=object), allow_pickle=True)
    out = tmp_path / "out"
    assert run(src, out) == 1
    assert sf.info(out / "a.wav").frames == 30 * HOP and sf.info(out / "b.wav").frames == 20 * HOP
    printed = capsys.readouterr().out
    assert "2 written, 0 skipped, 2 failed" in printed
    assert (
        "failed bands.npy: mel has 80 bands" in printed
        and "failed objects.npy: cannot load mel file" in printed
    )


@pytest.mark.parametrize("content", ["empty", "others", "hidden", "nested"])
def test_nothing_to_vocode_is_an_error(tmp_path, content, capsys):
    src = tmp_path / "in"
    src.mkdir()
    if content == "others":
        (src / "notes.txt").write_text("x")
        np.savez(src / "mels.npz", mel=np.zeros((100, 10)))
    elif content == "hidden":
        (src / ".a.wav").write_bytes(b"")
    elif content == "nested":
        (src / "sub").mkdir()
        sf.write(src / "sub" / "a.wav", np.zeros(4000, np.float32), 24000)
    assert run(src, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "nothing to vocode" in err and ".npy" in err and ".wav" in err
    expected = {
        "empty": "it is empty",
        "others": "2 other file(s): .npz .txt",
        "hidden": "it is empty",
        "nested": "sub-folders are read with --recursive",
    }
    assert expected[content] in err


def test_audio_keeps_its_length_in_every_mode(tmp_path, mel):
    src = tmp_path / "in"
    src.mkdir()
    speech = load_audio(REPO / "test_data/wav/us_male_fox.wav", 24000).numpy()
    lengths = {"a.wav": 9001, "b.wav": 5000, "c.wav": 7777}
    for name, n in lengths.items():
        sf.write(src / name, speech[:n], 24000)
    torch.save(mel, src / "m.pt")
    for mode, extra in {
        "single": [],
        "chunked": ["--chunk-size", "7"],
        "batched": ["--batch-size", "2"],
    }.items():
        out = tmp_path / mode
        assert run(src, out, *extra) == 0, mode
        for name, n in lengths.items():
            assert sf.info(out / name).frames == n, (mode, name)
        assert sf.info(out / "m.wav").frames == 30 * HOP, mode


def test_unusable_device_is_a_usage_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        main(
            [
                *MODEL_ARGS[:4],
                "--device",
                "cuda",
                "--input-dir",
                str(REPO / "test_data/mel"),
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err
