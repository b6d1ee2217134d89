"""Reference import paths work as drop-ins: ``flow2gan.models.config``, ``flow2gan.models.modules``."""

import pytest
import torch

from flow2gan.config import GeneratorConfig
from flow2gan.features import LinearFilterSpectrogram as FeaturesLinear
from flow2gan.features import LogMelSpectrogram as FeaturesLogMel
from flow2gan.models.config import HF_MODEL_NAMES, HF_REPO, get_gan_config, get_generator_config
from flow2gan.models.gan import GAN
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.modules import LinearFilterSpectrogram, LogMelSpectrogram


def test_hf_names_and_repo():
    assert HF_REPO == "k2-fsa/Flow2GAN"
    assert len(HF_MODEL_NAMES) == 9
    assert "libritts-mel-4-step" in HF_MODEL_NAMES
    assert "universal-44k-mel-128band-512x-1-step" in HF_MODEL_NAMES


def test_generator_config_attribute_item_and_kwargs_access():
    cfg = get_generator_config("mel_24k_small")
    assert cfg.n_mels == cfg["n_mels"] == 100
    assert cfg["n_ffts"] == (512, 256, 128)
    assert "mel_hop_length" in cfg and "typo" not in cfg
    with pytest.raises(KeyError):
        cfg["typo"]
    assert dict(cfg)["channels"] == (96, 64, 48) and len(cfg) == len(list(cfg.keys()))
    model = MelAudioGenerator(**cfg)
    assert model.config == cfg and isinstance(model.config, GeneratorConfig)
    assert hash(cfg) == hash(get_generator_config("mel_24k_small"))


def test_gan_from_reference_gan_config():
    generator = MelAudioGenerator(**get_generator_config("mel_24k_small"))
    cfg = get_gan_config("gan_multi_scale_mel_recon")
    assert cfg["mel_recon_n_ffts"] == cfg.mel_recon_n_ffts == (32, 64, 128, 256, 512, 1024, 2048)
    assert cfg["mel_recon_n_mels"] == (5, 10, 20, 40, 80, 160, 320)
    gan = GAN(generator, **get_gan_config("gan_small_multi_scale_mel_recon"))
    assert len(gan.mel_recon_modules) == 7 and gan.generator is generator
    assert [m.n_mels for m in gan.mel_recon_modules] == [5, 10, 20, 40, 80, 160, 320]
    assert dict(get_gan_config("gan_single_scale_mel_recon"))["mel_recon_n_mels"] == (100,)


def test_modules_front_ends_are_the_real_ones():
    assert LogMelSpectrogram is FeaturesLogMel and LinearFilterSpectrogram is FeaturesLinear
    mel = LogMelSpectrogram(sampling_rate=24000, n_fft=1024, hop_length=256, n_mels=100, center=True, power=1)
    assert mel(torch.zeros(1, 2560)).shape == (1, 100, 11)
    assert LinearFilterSpectrogram(24000, 1024, 256)(torch.zeros(1, 2560)).shape == (1, 256, 11)
