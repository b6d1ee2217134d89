"""Training learns on real speech: held-out spectra move towards the reference within 80-160 batches.

CI-sized versions of ``benchmarks/learning.py`` on LJ001-0001..0026 (``../shared/data/ljspeech-32``),
8 x 0.5 s crops; the 2-step sampler then vocodes the first 2 s of two never-trained files (LJ001-0027,
LJ001-0028).

Stage 2 of the CPU-budget model (``mel_24k_small_envelope``, the real fine-tuning CLI from an untrained
generator, 78 batches = 39 G + 39 D updates; ~55 s on a quiet thread). Measured: MR-STFT 2.11 -> 1.66
(0.79x, asserted < 0.9x), log-mel L1 1.23 -> 0.84 (0.68x, asserted < 0.8x).

Stage 1 of the paper's architecture (``mel_24k_small``, the real pre-training CLI, 156 batches).
Measured (1 thread, ~40 s CPU): MR-STFT distance 3.94 untrained -> 3.36 trained (asserted: < 0.9x);
log-mel L1 2.17 -> 2.24, i.e. *not* better, because at this scale the stage-1 model's output is 30-40x
too quiet (RMS 0.003 vs 0.12 for the reference: the few-step flow-matching prediction shrinks towards the
conditional mean). With the level offset removed (mean log-mel difference subtracted) the mel L1 falls,
1.99 -> 1.84 (asserted: < 0.95x); that is the mel check.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from flow2gan.audio import load_audio, peak_normalize
from flow2gan.bin import finetune, prepare_manifests, pretrain
from flow2gan.config import get_generator_config
from flow2gan.eval.metrics import mr_stft_distance
from flow2gan.features import LogMelSpectrogram
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.training.loop import fix_random_seed
from flow2gan.weights import load_checkpoint

LJ = REPO.parent / "shared" / "data" / "ljspeech-32"
MODEL = "mel_24k_small"
SEED = 42
MRSTFT_RATIO = 0.9
MEL_SHAPE_RATIO = 0.95
REPEAT_GAN = 24  # 78 batches: 39 discriminator and 39 generator updates
MRSTFT_RATIO_GAN = 0.9
MEL_RATIO_GAN = 0.8


def heldout_scores(generator: MelAudioGenerator, mel: LogMelSpectrogram) -> tuple[float, float, float]:
    """Mean MR-STFT distance, log-mel L1 and level-free log-mel L1 of 2-step vocoding (first 2 s)."""
    scores = []
    for name in ("LJ001-0027", "LJ001-0028"):
        audio = peak_normalize(load_audio(LJ / f"{name}.wav", 24000)[:48000], -3.0)
        cond = mel(audio[None])
        with torch.no_grad():
            pred = generator.eval().infer(cond, n_timesteps=2, generator=torch.Generator().manual_seed(0))
        pred = pred[0, : audio.numel()]
        diff = mel(pred[None]) - cond
        shape = (diff - diff.mean()).abs().mean()
        scores.append((mr_stft_distance(audio.numpy(), pred.numpy()), float(diff.abs().mean()), float(shape)))
    return tuple(np.mean(scores, axis=0).tolist())


def lj_training_flags(tmp_path: Path, model: str, repeat: int) -> list[str]:
    """Manifest of LJ001-0001..0026 (``repeat`` visits per epoch) and the flags both stages share."""
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    for i in range(1, 27):
        (train_dir / f"LJ001-{i:04d}.wav").symlink_to(LJ / f"LJ001-{i:04d}.wav")
    manifest = tmp_path / "train.jsonl.gz"
    args = ["--wav-dir", str(train_dir), "--out", str(manifest), "--repeat", str(repeat)]
    assert prepare_manifests.main(args) == 0
    flags = ["--train-recordings", str(manifest), "--valid-recordings", str(manifest), "--model-name", model]
    flags += [
        "--exp-dir",
        str(tmp_path / "exp"),
        "--num-epochs",
        "1",
        "--batch-size",
        "8",
        "--duration",
        "0.5",
    ]
    flags += ["--train-num-workers", "0", "--valid-num-workers", "0", "--tensorboard", "false"]
    return flags + ["--valid-interval", "100000", "--seed", str(SEED)]


@pytest.mark.slow
def test_pretraining_improves_heldout_spectra(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    assert pretrain.main([*lj_training_flags(tmp_path, MODEL, 48), "--warmup-batches", "20"]) == 0

    config = get_generator_config(MODEL)
    mel = LogMelSpectrogram(24000, config.mel_n_fft, config.mel_hop_length, config.n_mels)
    fix_random_seed(SEED)  # the generator the run started from
    untrained = heldout_scores(MelAudioGenerator(config), mel)
    model = MelAudioGenerator(config)
    load_checkpoint(exp / "epoch-1.pt", model)
    trained = heldout_scores(model, mel)
    print(f"untrained (MR-STFT, mel L1, level-free mel L1) {untrained}; trained {trained}")
    assert trained[0] < MRSTFT_RATIO * untrained[0]
    assert trained[2] < MEL_SHAPE_RATIO * untrained[2]


@pytest.mark.slow
def test_envelope_model_gan_stage_learns_heldout_spectra(tmp_path: Path) -> None:
    """CPU-budget path (``mel_24k_small_envelope``, stage 2 from scratch, 2 steps): mel and MR-STFT fall."""
    model_name = "mel_24k_small_envelope"
    flags = lj_training_flags(tmp_path, model_name, REPEAT_GAN)
    flags += [
        "--n-timesteps",
        "2",
        "--gan-name",
        "gan_small_multi_scale_mel_recon",
        "--gen-start-batch-idx",
        "0",
    ]
    flags += ["--base-lr-gen", "0.02", "--lr-batches-gen", "5000", "--warmup-batches", "20"]
    assert finetune.main(flags) == 0

    config = get_generator_config(model_name)
    mel = LogMelSpectrogram(24000, config.mel_n_fft, config.mel_hop_length, config.n_mels)
    fix_random_seed(SEED)
    untrained = heldout_scores(MelAudioGenerator(config), mel)
    model = MelAudioGenerator(config)
    load_checkpoint(tmp_path / "exp" / "epoch-1.pt", model)
    trained = heldout_scores(model, mel)
    print(f"untrained (MR-STFT, mel L1, level-free mel L1) {untrained}; trained {trained}")
    assert trained[0] < MRSTFT_RATIO_GAN * untrained[0]
    assert trained[1] < MEL_RATIO_GAN * untrained[1]
