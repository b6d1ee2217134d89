"""Front-end parity: log-mel (mel_ref.pt) and the FM-loss linear filterbank (loss_fb_24k.pt)."""

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import PARITY, REPO

from flow2gan.features import LinearFilterSpectrogram, LogMelSpectrogram, mel_filterbank
from flow2gan.models.modules import LogMelSpectrogram as ReferenceImportPath

SHARED_WAV = REPO.parent / "shared" / "test_data"


def pcm(path) -> torch.Tensor:
    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return torch.from_numpy(data.astype(np.float32) / 32768.0).mean(dim=1)


def test_drop_in_import_path():
    assert ReferenceImportPath is LogMelSpectrogram
    mel = ReferenceImportPath(
        sampling_rate=24000, n_fft=1024, hop_length=256, n_mels=100, center=True, power=1
    )
    assert mel(torch.zeros(1, 2560)).shape == (1, 100, 11)


@pytest.mark.skipif(not SHARED_WAV.is_dir(), reason="needs ../shared/test_data")
def test_log_mel_matches_reference():
    ref = torch.load(PARITY / "mel_ref.pt", weights_only=True)
    wav24 = pcm(SHARED_WAV / "wav" / "1089_134686_000002_000000.wav")
    mel24 = LogMelSpectrogram(24000, 1024, 256, 100)(wav24.unsqueeze(0))
    torch.testing.assert_close(mel24, ref["mel_24k"], atol=1e-3, rtol=0)
    wav44 = pcm(SHARED_WAV / "wav_44k" / "mixture.wav")[:88200]
    mel44 = LogMelSpectrogram(44100, 2048, 512, 128)(wav44.unsqueeze(0))
    torch.testing.assert_close(mel44, ref["mel_44k"], atol=1e-3, rtol=0)


def test_log_mel_of_fixture_audio_is_consistent():
    ref = torch.load(PARITY / "tiny_24k_ref.pt", weights_only=True)
    mel = LogMelSpectrogram(24000, 1024, 256, 100)(ref["wav"])
    torch.testing.assert_close(mel, ref["mel"], atol=1e-3, rtol=0)
    batch_mel = LogMelSpectrogram(24000, 1024, 256, 100)(ref["batch_audio"])
    torch.testing.assert_close(batch_mel, ref["batch_mel"], atol=1e-3, rtol=0)


def test_linear_filterbank_and_spectrogram():
    ref = torch.load(PARITY / "loss_fb_24k.pt", weights_only=True)
    spec = LinearFilterSpectrogram(24000, 1024, 256, 256)
    torch.testing.assert_close(spec.fb, ref["fb"], atol=1e-6, rtol=0)
    out = spec(ref["wav"])
    assert out.shape == ref["linspec"].shape
    assert (out - ref["linspec"]).abs().max() <= 1e-5 * ref["linspec"].abs().max()


def test_mel_filterbank_is_htk_without_norm():
    fb = mel_filterbank(513, 24000, 100)
    assert fb.shape == (513, 100)
    assert fb.max() <= 1.0 and fb.min() >= 0.0
    assert (fb.sum(dim=0) > 0).all()  # every filter non-empty at 24 kHz
    assert fb[-1].sum() < 1e-4  # the Nyquist bin sits on the last filter's right edge


def test_log_floor_and_short_audio_error():
    mel = LogMelSpectrogram(24000, 1024, 256, 100)
    assert torch.allclose(mel(torch.zeros(1, 1024)), torch.tensor(np.log(1e-7), dtype=torch.float32))
    with pytest.raises(ValueError, match="too short"):
        mel(torch.zeros(1, 100))
