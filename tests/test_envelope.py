"""Mel-envelope preconditioning (flow2gan.models.envelope): same weights, exact endpoints, exact chunks."""

import numpy as np
import pytest
import torch
from conftest import PARITY

from flow2gan.config import get_generator_config
from flow2gan.deploy import ExportableSampler, export_sampler
from flow2gan.features import complex_stft, mel_frontend
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.onnx import OnnxVocoder
from flow2gan.weights import load_checkpoint

TINY_CONFIG = get_generator_config(str(PARITY / "tiny_24k_config.json"))


@pytest.fixture(scope="module")
def model() -> MelAudioGenerator:
    torch.manual_seed(0)
    return MelAudioGenerator(TINY_CONFIG.replace(envelope_precond=True)).eval()


def test_same_state_dict_as_the_paper_model(model):
    plain = MelAudioGenerator(TINY_CONFIG)
    assert list(model.state_dict()) == list(plain.state_dict())
    load_checkpoint(PARITY / "tiny_24k.pt", model)  # a paper-layout checkpoint loads unchanged
    assert get_generator_config("mel_24k_small_envelope").envelope_precond
    assert not get_generator_config("mel_24k_base").envelope_precond


def test_endpoint_at_t1_is_the_input_and_untrained_level_follows_the_mel(model):
    """c_skip = 1, c_out = 0 at t = 1; at t = 0 an untrained model already has the mel's level."""
    audio = 0.1 * torch.randn(2, 12000) * torch.linspace(0.05, 1.0, 12000)
    mel = mel_frontend(model.config)(audio)
    with torch.no_grad():
        cond = model.encode_cond(mel)
        assert cond.shape == (2, model.config.cond_enc_channels + model.config.n_mels, mel.shape[-1])
        same = model.estimate(audio, cond, torch.ones(2))
        valid = 12000 - 12000 % 256
        assert (same - audio)[:, :valid].abs().max() < 1e-5
        out = model.infer(mel, n_timesteps=1, generator=torch.Generator().manual_seed(0))
    level = mel_frontend(model.config)(out[:, :12000]).mean() - mel.mean()
    assert abs(float(level)) < 1.5  # log-mel units; the paper's init is ~ -2.5 (outputs ~12x too quiet)


def test_envelope_tracks_the_stft_magnitude():
    config = get_generator_config("mel_24k_small_envelope")
    gen = MelAudioGenerator(config)
    audio = 0.2 * torch.randn(1, 24000)
    mel = mel_frontend(config)(audio)
    for i, est in enumerate(gen.estimators):
        env = gen.envelope(mel, i, est.n_frames(audio.shape[-1]))
        mag = complex_stft(audio, est.n_fft, est.hop_length, torch.hann_window(est.n_fft)).abs()
        ratio = float((mag[:, 2:-2, 4:-4] / env[:, 2:-2, 4:-4]).median())
        assert 0.7 < ratio < 1.3, (est.n_fft, ratio)  # white noise: median |X| / E


@pytest.mark.parametrize("n_timesteps", [1, 4])
def test_chunked_equals_offline(model, n_timesteps):
    mel = torch.randn(2, 100, 57) - 4
    noise = 0.1 * torch.randn(2, 57 * 256)
    with torch.no_grad():
        whole = model.infer(mel, n_timesteps=n_timesteps, noise=noise)
        chunked = model.infer_chunked(mel, 9, n_timesteps=n_timesteps, noise=noise)
    assert (whole - chunked).abs().max() < 1e-5


@pytest.mark.slow
def test_onnx_export(model, tmp_path):
    path = export_sampler(model, 2, tmp_path / "env.onnx")
    mel, noise = torch.randn(1, 100, 23) - 4, 0.1 * torch.randn(1, 23 * 256)
    with torch.inference_mode():
        ref = model.infer(mel, n_timesteps=2, noise=noise, clamp_pred=True)
        assert (ExportableSampler(model, 2)(mel, noise) - ref).abs().max() <= 1e-5
    out = OnnxVocoder(path, threads=1).infer(mel.numpy(), noise.numpy())
    assert np.abs(out - ref.numpy()).max() <= 1e-4


def test_token_models_reject_it():
    with pytest.raises(ValueError, match="needs a mel condition"):
        get_generator_config("encodec_24k_small").replace(envelope_precond=True)
