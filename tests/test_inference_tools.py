"""The inference tools agree: offline hub errors, stored configs and step counts, file permissions, help."""

import json
import logging
import os
import socket
import stat

import pytest
import torch
from conftest import PARITY, REPO

from flow2gan import get_model
from flow2gan.audio import save_audio
from flow2gan.bin import export as export_cli
from flow2gan.bin import infer as infer_cli
from flow2gan.bin import infer_dir as infer_dir_cli
from flow2gan.cli import prog_name
from flow2gan.config import get_generator_config
from flow2gan.pretrained import EXIT_HUB_UNAVAILABLE, HubUnavailableError, download_pretrained
from flow2gan.training.options import pretrain_parser
from flow2gan.weights import save_atomic

TINY_CONFIG = str(PARITY / "tiny_24k_config.json")
TINY_CKPT = PARITY / "tiny_24k.pt"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr("flow2gan.pretrained.hub_cache_dir", lambda: cache)

    def no_download(*args, **kwargs):
        raise AssertionError("the hub must not be contacted")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    return cache


def test_offline_env_fails_fast_with_one_message(empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError) as exc:
        download_pretrained("libritts-mel-2-step")
    message = str(exc.value)
    for part in ("libritts-mel-2-step.pt", "HF_HUB_OFFLINE", str(empty_cache), "--checkpoint", "checkpoint="):
        assert part in message


def test_unreachable_hub_fails_fast(empty_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(HubUnavailableError, match="cannot be reached: Network is unreachable"):
        get_model(hf_model_name="libritts-mel-1-step")


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        (infer_dir_cli.main, ["--input-dir", ".", "--output-dir", "OUT"]),
        (export_cli.main, ["--output", "OUT/m.onnx"]),
        (infer_cli.main, ["--test-recordings", "M", "--output-dir", "OUT", "--n-timesteps", "2"]),
    ],
)
def test_every_tool_has_the_same_offline_exit_code(empty_cache, monkeypatch, tmp_path, caplog, tool, args):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = tmp_path / "m.jsonl"  # read before the model is loaded; its audio is only found, not read
    (tmp_path / "x.wav").touch()
    source = {"type": "file", "channels": [0], "source": str(tmp_path / "x.wav")}
    manifest.write_text(json.dumps({"id": "x", "sources": [source]}) + "\n")
    args = [str(manifest) if a == "M" else a.replace("OUT", str(tmp_path / "out")) for a in args]
    args += ["--exp-dir", str(tmp_path / "exp")] if tool is infer_cli.main else []
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exc:
        tool([*args, "--hf-model-name", "libritts-mel-2-step"])
    assert exc.value.code == EXIT_HUB_UNAVAILABLE
    assert "HF_HUB_OFFLINE" in caplog.text and "--checkpoint" in caplog.text
    assert not (tmp_path / "out").exists()


def test_stored_config_and_steps_are_the_defaults(tmp_path, capsys):
    config = get_generator_config(TINY_CONFIG)
    state = torch.load(TINY_CKPT, weights_only=True)["model"]
    path = tmp_path / "avg.pt"
    save_atomic({"model": state, "config": config.to_dict(), "n_timesteps": 2}, path)
    model, loaded = get_model(checkpoint=path)
    assert loaded == config and model.default_n_timesteps == 2
    by_name = tmp_path / "named.pt"
    save_atomic({"model": state, "model_name": TINY_CONFIG}, by_name)
    assert get_model(checkpoint=by_name)[1] == config
    with pytest.raises(ValueError, match="does not match"):  # --model-name still overrides
        get_model(model_name="mel_24k_small", checkpoint=path)

    mel = torch.load(REPO / "test_data/mel/us_male_fox.pt", weights_only=True)
    src = tmp_path / "in"
    src.mkdir()
    torch.save(mel[..., :20].clone(), src / "m.pt")
    out = tmp_path / "out"
    assert (
        infer_dir_cli.main(["--checkpoint", str(path), "--input-dir", str(src), "--output-dir", str(out)])
        == 0
    )
    assert (out / "m.wav").is_file()


def test_step_count_defaults_to_the_checkpoints(tmp_path, caplog):
    state = torch.load(TINY_CKPT, weights_only=True)["model"]
    path = tmp_path / "two.pt"
    save_atomic(
        {"model": state, "config": get_generator_config(TINY_CONFIG).to_dict(), "n_timesteps": 2}, path
    )
    calls = []
    model, _ = get_model(checkpoint=path)
    original = type(model).infer

    def spy(self, cond, audio_lens=None, n_timesteps=None, *args, **kwargs):
        calls.append(n_timesteps)
        return original(self, cond, audio_lens, n_timesteps, *args, **kwargs)

    src = tmp_path / "in"
    src.mkdir()
    torch.save(torch.zeros(1, 100, 12) - 5.0, src / "z.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(model), "infer", spy)
        args = ["--checkpoint", str(path), "--input-dir", str(src), "--output-dir", str(tmp_path / "o")]
        assert infer_dir_cli.main(args) == 0
        with caplog.at_level(logging.WARNING):
            assert infer_dir_cli.main([*args, "--n-timesteps", "1", "--overwrite"]) == 0
    assert calls == [2, 1]
    assert "fine-tuned for 2 steps; running 1" in caplog.text


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_audio(tmp_path / "a.wav", torch.zeros(100), 24000)
        save_atomic({"model": {}}, tmp_path / "w.pt")
    finally:
        os.umask(old)
    for name in ("a.wav", "w.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "w.pt"]  # no temp files left


@pytest.mark.parametrize("build", [infer_dir_cli.build_parser, infer_cli.parser, export_cli.build_parser])
def test_every_option_has_help_and_no_spec_reference(build):
    parser = build()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
    assert "SPEC" not in parser.format_help()


def test_usage_line_names_the_console_script(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/venv/bin/flow2gan-infer-dir", "--help"])
    assert prog_name("flow2gan.bin.infer_dir") == "flow2gan-infer-dir"
    assert infer_dir_cli.build_parser().format_usage().startswith("usage: flow2gan-infer-dir")
    monkeypatch.setattr("sys.argv", ["/repo/flow2gan/bin/infer_dir.py"])
    assert prog_name("flow2gan.bin.infer_dir") == "python -m flow2gan.bin.infer_dir"
    monkeypatch.setattr("sys.argv", ["/repo/flow2gan/bin/train.py"])  # the alias keeps its own name
    assert pretrain_parser().format_usage().startswith("usage: python -m flow2gan.bin.train")
    for argv0 in ("-c", "/repo/other/script.py"):
        monkeypatch.setattr("sys.argv", [argv0])
        assert prog_name("flow2gan.bin.pretrain") == "python -m flow2gan.bin.pretrain"
