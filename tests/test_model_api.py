"""State-dict layout of the full configs, checkpoint loading, get_model (local and HF cache), input errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PARITY, REPO

from flow2gan import GeneratorConfig, MelAudioGenerator, get_generator_config, get_model, load_checkpoint
from flow2gan.pretrained import HF_MODELS

TINY_CONFIG = PARITY / "tiny_24k_config.json"
TINY_CKPT = PARITY / "tiny_24k.pt"


@pytest.mark.parametrize("name", ["mel_24k_base", "mel_44k_128band_512x_base"])
def test_full_config_state_dict_matches_manifest(name):
    manifest = json.loads((PARITY / f"manifest_{name}.json").read_text())
    assert get_generator_config(name) == GeneratorConfig.from_dict(manifest["config"])
    with torch.device("meta"):
        model = MelAudioGenerator(get_generator_config(name))
    sd = model.state_dict()
    assert list(sd) == list(manifest["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == {k: v[0] for k, v in manifest["state_dict"].items()}
    assert len(sd) == manifest["num_state_dict_entries"] == 433
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


def test_reference_style_constructor_and_config_access():
    cfg = json.loads(TINY_CONFIG.read_text())["config"]
    model = MelAudioGenerator(**cfg)
    assert model.config.channels == (32, 24, 16)
    assert model.config["n_mels"] == model.config.n_mels == 100


def test_config_from_json_path_and_errors(tmp_path):
    assert get_generator_config(str(TINY_CONFIG)).channels == (32, 24, 16)
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(json.loads(TINY_CONFIG.read_text())["config"]))
    assert get_generator_config(str(flat)) == get_generator_config(str(TINY_CONFIG))
    with pytest.raises(ValueError, match="unknown model name"):
        get_generator_config("mel_48k_huge")
    with pytest.raises(ValueError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({"sampling_rate": 24000, "n_fft_typo": 3})


def tiny_model() -> MelAudioGenerator:
    return MelAudioGenerator(get_generator_config(str(TINY_CONFIG)))


def test_get_model_local_checkpoint_eval_mode():
    model, cfg = get_model(model_name=str(TINY_CONFIG), checkpoint=TINY_CKPT)
    assert not model.training
    assert (cfg.sampling_rate, cfg.mel_n_fft, cfg.mel_hop_length, cfg.n_mels) == (24000, 1024, 256, 100)
    ref = torch.load(PARITY / "tiny_24k_ref.pt", weights_only=True)
    with torch.inference_mode():
        out = model.infer(cond=ref["mel"], n_timesteps=2, noise=ref["noise"], clamp_pred=True)
    torch.testing.assert_close(out, ref["out_2"], atol=1e-5, rtol=0)


def test_load_checkpoint_prefixes(tmp_path):
    sd = torch.load(TINY_CKPT, weights_only=True)["model"]
    ddp = tmp_path / "ddp.pt"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, ddp)
    gan = tmp_path / "gan.pt"
    gan_sd = {"generator." + k: v for k, v in sd.items()}
    gan_sd["discriminator.0.conv.weight"] = torch.zeros(3)
    torch.save({"model": gan_sd, "batch_idx_train": 7}, gan)
    for path in (ddp, gan):
        model = tiny_model()
        extras = load_checkpoint(path, model)
        assert torch.equal(
            model.state_dict()["cond_encoder.in_proj.weight"], sd["cond_encoder.in_proj.weight"]
        )
    assert extras == {"batch_idx_train": 7}


def test_load_checkpoint_wrong_keys_fail_loudly(tmp_path):
    sd = torch.load(TINY_CKPT, weights_only=True)["model"]
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"encoder." + k: v for k, v in sd.items()}}, bad)
    with pytest.raises(ValueError, match="missing keys: loss_spec.fb"):
        load_checkpoint(bad, tiny_model())
    with pytest.raises(ValueError, match="no checkpoint key matches"):
        load_checkpoint(bad, tiny_model(), strict=False)
    partial = tmp_path / "partial.pt"
    torch.save({"model": {k: v for k, v in sd.items() if "estimators.2" not in k}}, partial)
    with pytest.raises(ValueError, match="estimators.2"):
        load_checkpoint(partial, tiny_model())
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt", tiny_model())
    with pytest.raises(ValueError, match="shape mismatch"):
        load_checkpoint(TINY_CKPT, MelAudioGenerator(get_generator_config("mel_24k_small")))


def test_get_model_argument_errors():
    with pytest.raises(ValueError, match="libritts-mel-1-step"):
        get_model(hf_model_name="libritts-mel-3-step")
    with pytest.raises(ValueError, match="needs checkpoint"):
        get_model(hf_model_name=None)
    with pytest.raises(ValueError, match="holds a mel_44k_128band_512x_base model, not 'mel_24k_base'"):
        get_model(model_name="mel_24k_base", hf_model_name="universal-44k-mel-128band-512x-2-step")
    with pytest.raises(ValueError, match="sampling_rate=44100"):
        get_model(model_name=str(TINY_CONFIG), hf_model_name="universal-44k-mel-128band-512x-2-step")
    assert len(HF_MODELS) == 9


def test_get_model_config_without_released_weights_explains_offline():
    """A registered config without released weights: an error listing the pairs, before any download."""
    with pytest.raises(ValueError) as info:
        get_model(model_name="mel_24k_small")
    message = str(info.value)
    assert "not 'mel_24k_small'" in message and "pretrained=False" in message and "checkpoint=" in message
    assert "model_name='mel_24k_base': libritts-mel-1-step" in message
    assert "model_name='mel_44k_128band_512x_base': universal-44k-mel-128band-512x-1-step" in message


def test_get_model_pretrained_false_builds_a_random_model():
    model, cfg = get_model(model_name="mel_24k_small", pretrained=False)
    assert not model.training and cfg.channels == (96, 64, 48) and model.default_n_timesteps is None
    with torch.inference_mode():
        assert model.infer(torch.zeros(1, 100, 4)).shape == (1, 1024)
    with pytest.raises(ValueError, match="pretrained=False"):
        get_model(model_name="mel_24k_small", checkpoint=TINY_CKPT, pretrained=False)


def make_hub_cache(root: Path, filename: str) -> None:
    repo = root / "models--k2-fsa--Flow2GAN"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(TINY_CKPT.read_bytes())


@pytest.mark.slow
def test_get_model_from_hf_cache_offline(tmp_path):
    make_hub_cache(tmp_path, "libritts-mel-2-step.pt")
    code = (
        "import torch; from flow2gan import get_model; "
        f"m, c = get_model(model_name={str(TINY_CONFIG)!r}, hf_model_name='libritts-mel-2-step'); "
        "out = m.infer(torch.zeros(1, 100, 3)); "
        "print(m.default_n_timesteps, m.training, c.sampling_rate, tuple(out.shape))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "False", "24000", "(1,", "768)"]


@torch.inference_mode()
def test_bad_inputs_get_clear_errors():
    model = tiny_model().eval()
    with pytest.raises(ValueError, match="expects n_mels=100"):
        model.infer(torch.zeros(1, 80, 10))
    with pytest.raises(ValueError, match="shape"):
        model.infer(torch.zeros(100))
    with pytest.raises(ValueError, match="NaN"):
        model.infer(torch.full((1, 100, 10), float("nan")))
    with pytest.raises(ValueError, match="n_timesteps"):
        model.infer(torch.zeros(1, 100, 10), n_timesteps=0)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.infer(torch.zeros(1, 100, 10), noise=torch.zeros(1, 100))
    assert model.infer(torch.zeros(100, 10)).shape == (1, 2560)


@torch.inference_mode()
def test_reproducible_noise_with_generator():
    model = tiny_model().eval()
    mel = torch.randn(2, 100, 8)
    a = model.infer(mel, n_timesteps=2, generator=torch.Generator().manual_seed(3))
    b = model.infer(mel, n_timesteps=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (2, 8 * 256)


@torch.inference_mode()
def test_bf16_autocast_inference_runs_close_to_fp32():
    model = tiny_model().eval()
    mel = torch.load(REPO / "test_data" / "mel" / "us_male_fox.pt", weights_only=True)[..., :40]
    noise = 0.1 * torch.randn(1, 40 * 256)
    fp32 = model.infer(mel, n_timesteps=2, noise=noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.infer(mel, n_timesteps=2, noise=noise)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert 0 < (bf16 - fp32).abs().max() < 0.05
