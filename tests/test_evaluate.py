"""Evaluation metrics (PESQ, STOI, MR-STFT, CREPE pitch, FSD) and the ``evaluate`` CLI on test_data."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO

from flow2gan.audio import read_audio, resample
from flow2gan.bin.evaluate import main
from flow2gan.cli import str2bool
from flow2gan.eval.crepe import import_torchcrepe
from flow2gan.eval.fsd import Wav2Vec2Embedder, frechet_distance
from flow2gan.eval.metrics import MetricsConfig, mr_stft_distance, score_pair, to_16k_padded
from flow2gan.eval.pairs import mean_scores
from flow2gan.eval.pitch import (
    PitchConfig,
    PitchTrack,
    extract_pitch,
    pitch_metrics,
    resize_track,
)
from flow2gan.features import LogMelSpectrogram

SR = 24000
WAV_DIR = REPO / "test_data" / "wav"
NO_PITCH = MetricsConfig(pitch=False)


def _wav(name: str) -> np.ndarray:
    data, sr = read_audio(WAV_DIR / f"{name}.wav")
    assert sr == SR
    return data[:, 0]


def _add_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.shape[0]).astype(np.float32)
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return _wav("us_male_fox")


@pytest.fixture(scope="module")
def pitch_pair(speech: np.ndarray) -> tuple[PitchTrack, PitchTrack]:
    """CREPE tracks of 1 s of clean speech and of the same second at 10 dB SNR (the slow part: ~7 s)."""
    np.random.seed(0)
    clip = speech[:SR]
    return extract_pitch(clip), extract_pitch(_add_noise(clip, 10.0))


def test_project_test_data_is_consistent() -> None:
    """The generated WAVs have the advertised formats and the stored mels match the front-end."""
    names = sorted(p.stem for p in WAV_DIR.glob("*.wav"))
    assert len(names) == 4
    for name in names:
        info = sf.info(str(WAV_DIR / f"{name}.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert 1.5 <= info.duration <= 4.0
    mel = torch.load(REPO / "test_data" / "mel" / f"{names[0]}.pt")
    expected = LogMelSpectrogram(SR, 1024, 256, 100)(torch.from_numpy(_wav(names[0]))[None])
    assert mel.dtype == torch.float32 and mel.shape == expected.shape
    # Compare magnitudes, not logs: FFT kernels differ across instruction sets (AVX2 / AVX-512) by a few
    # float32 ulps of the *largest* bin, which is a large log difference in near-silent bins.
    peak = expected.exp().max().item()
    torch.testing.assert_close(mel.exp(), expected.exp(), atol=1e-5 * peak, rtol=0)
    stereo = REPO / "test_data" / "wav_44k" / "stereo_two_voices.wav"
    info = sf.info(str(stereo))
    assert (info.samplerate, info.channels) == (44100, 2)
    mel44 = torch.load(REPO / "test_data" / "mel_44k_128band_512x" / "stereo_two_voices.pt")
    assert mel44.shape == (1, 128, 1 + info.frames // 512)
    total = sum(p.stat().st_size for p in (REPO / "test_data").rglob("*") if p.is_file())
    assert total < 1.5e6


def test_identical_pair_is_perfect(speech: np.ndarray) -> None:
    scores = score_pair(speech, speech, NO_PITCH)
    assert scores["pesq"] > 4.5
    assert scores["stoi"] > 0.99
    assert scores["mr_stft"] == pytest.approx(0.0, abs=1e-6)


def test_degraded_pairs_score_lower(speech: np.ndarray) -> None:
    noisy = score_pair(speech, _add_noise(speech, 10.0), NO_PITCH)
    assert noisy["pesq"] < 2.0 and noisy["stoi"] < 0.99 and noisy["mr_stft"] > 1.0
    lowpass = resample(resample(speech, SR, 8000), 8000, SR)
    muffled = score_pair(speech, lowpass, NO_PITCH)
    assert 1.0 < muffled["pesq"] < 4.2 and muffled["mr_stft"] > 1.0


def test_pairs_are_trimmed_to_the_shorter_signal(speech: np.ndarray) -> None:
    longer = np.concatenate([speech, np.ones(5000, dtype=np.float32)])
    assert score_pair(speech, longer, NO_PITCH)["mr_stft"] == pytest.approx(0.0, abs=1e-6)


def test_short_files_use_the_reference_padding_quirk() -> None:
    """L < 16000 original-rate samples: the 16 kHz signals get 16000 - L zeros appended."""
    x = np.random.default_rng(0).standard_normal(12000).astype(np.float32)
    ref16, pred16 = to_16k_padded(x, x, SR)
    assert ref16.shape == pred16.shape == (8000 + 4000,)
    assert np.all(ref16[8000:] == 0)
    long16, _ = to_16k_padded(np.zeros(20000, np.float32), np.zeros(20000, np.float32), SR)
    assert long16.shape == (20000 * 2 // 3,)


def test_mr_stft_of_a_halved_signal(speech: np.ndarray) -> None:
    """Halving the amplitude: spectral convergence 0.5 plus |ln 2| on every bin above the 1e-8 floor."""
    value = mr_stft_distance(speech, 0.5 * speech)
    assert 1.0 < value < 0.5 + math.log(2.0) + 1e-6


def test_pitch_metrics_on_synthetic_tracks() -> None:
    nan = math.nan
    ref = PitchTrack(torch.tensor([100.0, 200.0, nan, 100.0, nan]), torch.tensor([0.9, 0.8, 0.1, 0.7, 0.0]))
    pred = PitchTrack(torch.tensor([200.0, 200.0, 150.0, nan, nan]), torch.tensor([0.9, 0.8, 0.1, 0.2, 0.5]))
    out = pitch_metrics(ref, pred)
    assert out["vuv_precision"] == pytest.approx(2 / 3)  # tp 2, fp 1
    assert out["vuv_recall"] == pytest.approx(2 / 3)  # fn 1
    assert out["vuv_f1"] == pytest.approx(2 / 3)
    assert out["pitch_rmse"] == pytest.approx(1200.0 / math.sqrt(2.0))  # one octave off out of two frames
    assert out["periodicity"] == pytest.approx(math.sqrt((0.25 + 0.25) / 5))
    silent = PitchTrack(torch.full((3,), nan), torch.zeros(3))
    assert math.isnan(pitch_metrics(silent, silent)["vuv_f1"])


def test_resize_track_is_linear_in_log_pitch() -> None:
    pitch, periodicity = resize_track(torch.tensor([[100.0, 400.0]]), torch.tensor([[0.0, 1.0]]), 3)
    assert pitch.shape == periodicity.shape == (1, 3)
    torch.testing.assert_close(pitch[0, 1], torch.tensor(200.0))
    torch.testing.assert_close(periodicity[0, 1], torch.tensor(0.5))


@pytest.mark.slow
def test_crepe_pitch_protocol(pitch_pair: tuple[PitchTrack, PitchTrack]) -> None:
    clean, noisy = pitch_pair
    assert PitchConfig().crepe_hop == 170 and PitchConfig().crepe_pad == 427
    assert clean.pitch.shape == clean.periodicity.shape == (SR // 256,)
    voiced = ~torch.isnan(clean.pitch)
    assert 0.3 < voiced.float().mean() < 0.95
    assert torch.all((clean.pitch[voiced] > 50) & (clean.pitch[voiced] < 550))
    same = pitch_metrics(clean, clean)
    assert same["vuv_f1"] == 1.0 and same["periodicity"] == 0.0 and same["pitch_rmse"] == 0.0
    degraded = pitch_metrics(clean, noisy)
    assert degraded["periodicity"] > 0.03
    assert degraded["vuv_f1"] < 0.99


def test_crepe_pitch_is_dithered() -> None:
    """torchcrepe adds +-20-cent triangular dither to decoded pitch: identical audio differs slightly."""
    crepe = import_torchcrepe()
    bins = torch.full((1, 200), 100)
    cents = 1200.0 * torch.log2(crepe.convert.bins_to_frequency(bins) / crepe.convert.bins_to_frequency(bins))
    assert cents.abs().max() <= 40.0 and cents.abs().max() > 1.0


def test_import_torchcrepe_without_torchaudio() -> None:
    crepe = import_torchcrepe()
    assert callable(crepe.predict)
    assert (Path(crepe.__file__).parent / "assets" / "full.pth").is_file()
    assert "torchaudio" not in sys.modules
    with pytest.raises(ImportError, match="torchaudio is not installed"):
        crepe.load.audio("x.wav")


def test_frechet_distance() -> None:
    rng = np.random.default_rng(0)
    real = rng.standard_normal((400, 4))
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, 0.0])
    assert frechet_distance(real, real + shift) == pytest.approx(5.0, rel=1e-6)
    scaled = frechet_distance(real, 2.0 * real)  # |mu|^2 + tr(S) + tr(4S) - 2 tr(2S)
    expected = np.sum(real.mean(axis=0) ** 2) + np.trace(np.cov(real, rowvar=False))
    assert scaled == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(real[:1], real)


def test_fsd_needs_transformers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="transformers"):
        Wav2Vec2Embedder(tmp_path)


def test_cli_fails_fast_when_fsd_cannot_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "pred").mkdir()
    argv = ["--gt-wav-dir", str(tmp_path), "--pred-wav-dir", str(tmp_path / "pred")]
    assert main([*argv, "--fsd-model-path", str(tmp_path / "no_model")]) == 2
    assert "transformers" in caplog.text or "no_model" in caplog.text


BOOL_WORDS = [("yes", True), ("T", True), ("y", True), ("1", True), ("No", False), ("f", False), ("0", False)]


@pytest.mark.parametrize(("text", "value"), BOOL_WORDS)
def test_str2bool(text: str, value: bool) -> None:
    assert str2bool(text) is value


def test_str2bool_rejects_other_words() -> None:
    with pytest.raises(Exception, match="boolean value expected"):
        str2bool("maybe")


def test_mean_scores_skip_nan_pitch_utterances() -> None:
    records = [
        {"name": "a", "pesq": 4.0, "pitch_rmse": 10.0, "vuv_f1": 1.0, "periodicity": 0.1},
        {"name": "b", "pesq": 2.0, "pitch_rmse": math.nan, "vuv_f1": 0.5, "periodicity": 0.3},
        {"name": "c", "error": "missing file"},
    ]
    means = mean_scores(records)
    assert means["pesq"] == 3.0
    assert means["pitch_rmse"] == 10.0 and means["periodicity"] == 0.1 and means["vuv_f1"] == 1.0


def _make_dirs(root: Path, speech: np.ndarray) -> tuple[Path, Path]:
    gt, pred = root / "gt", root / "pred"
    for sub in ("", "spk"):
        (gt / sub).mkdir(parents=True, exist_ok=True)
        (pred / sub).mkdir(parents=True, exist_ok=True)
    sf.write(gt / "a.wav", speech, SR, subtype="PCM_16")
    sf.write(pred / "a.wav", speech, SR, subtype="PCM_16")
    sf.write(gt / "spk" / "b.wav", speech, SR, subtype="PCM_16")
    sf.write(pred / "spk" / "b.wav", _add_noise(speech, 10.0), SR, subtype="PCM_16")
    sf.write(gt / "gone.wav", speech, SR, subtype="PCM_16")
    return gt, pred


def test_cli_reports_missing_predictions(
    tmp_path: Path, speech: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    gt, pred = _make_dirs(tmp_path, speech)
    wav_list = tmp_path / "list.txt"
    wav_list.write_text("a.wav\nspk/b.wav\ngone.wav\n\n")
    out_json = tmp_path / "out" / "scores.json"
    args = ["--gt-wav-dir", str(gt), "--pred-wav-dir", str(pred), "--wav-list-file", str(wav_list)]
    assert main([*args, "--pitch", "no", "--output-json", str(out_json)]) == 1
    records = {rec["name"]: rec for rec in json.loads(out_json.read_text())}
    assert sorted(records) == ["a.wav", "spk/b.wav"]
    assert records["a.wav"]["pesq"] > 4.5 > 2.0 > records["spk/b.wav"]["pesq"]
    summary = json.loads((tmp_path / "out" / "scores_summary.json").read_text())
    assert summary["num_pairs"] == 3 and summary["num_scored"] == 2
    assert list(summary["failed"]) == ["gone.wav"] and "missing" in summary["failed"]["gone.wav"]
    mean_pesq = (records["a.wav"]["pesq"] + records["spk/b.wav"]["pesq"]) / 2
    assert summary["means"]["pesq"] == pytest.approx(mean_pesq)
    printed = capsys.readouterr().out
    assert "pesq" in printed and "2/3" in printed and "gone.wav" in printed


@pytest.mark.slow
def test_cli_entry_point_scans_pred_dir(tmp_path: Path, speech: np.ndarray) -> None:
    """``python -m flow2gan.bin.evaluate`` with 2 worker processes; no list = every WAV under pred."""
    gt, pred = _make_dirs(tmp_path, speech)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flow2gan.bin.evaluate", "--gt-wav-dir", str(gt), "--pred-wav-dir"]
    proc = subprocess.run(
        [*cmd, str(pred), "--pitch", "false", "--n-proc", "2", "--use-visqol", "true"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2/2" in proc.stdout
    records = json.loads((pred / "metrics.json").read_text())
    assert [rec["name"] for rec in records] == ["a.wav", "spk/b.wav"]
    means = json.loads((pred / "metrics_summary.json").read_text())["means"]
    assert means["stoi"] < 1.0 and means["mr_stft"] > 0.0
    assert means["visqol"] == "skipped" or means["visqol"] > 1.0  # ViSQOL only if a binding is importable
