"""benchmarks/learning.py and learning_eval.py: input checks, the NaN-aware means, a two-process run."""

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import PARITY, REPO

from flow2gan import get_model
from flow2gan.config import get_generator_config
from flow2gan.training.options import finetune_parser, gan_options

sys.path.insert(0, str(REPO / "benchmarks"))

import learning  # noqa: E402
import learning_eval  # noqa: E402

WAVS = REPO / "test_data" / "wav"  # the project's own speech


def contract_args(train: Path, held: Path, out: Path) -> list[str]:
    return ["--train-dir", str(train), "--heldout-dir", str(held), "--minutes", "1", "--out", str(out)]


def test_missing_folders_are_usage_errors_before_any_work(tmp_path: Path, capsys) -> None:
    held = tmp_path / "held"
    held.mkdir()
    for train, heldout in ((tmp_path / "missing", held), (held, tmp_path / "gone")):
        with pytest.raises(SystemExit) as exit_info:
            learning.main(contract_args(train, heldout, tmp_path / "out"))
        assert exit_info.value.code == 2
        assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").touch()
    for out in ("file", "file/out"):
        with pytest.raises(SystemExit) as exit_info:
            learning.main(contract_args(WAVS, WAVS, tmp_path / out))
        assert exit_info.value.code == 2
        assert "is not a folder or is inside a file" in capsys.readouterr().err


def test_folders_without_audio_are_usage_errors_before_any_work(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    for train, heldout, message in (
        (empty, WAVS, f"--train-dir {empty} has no audio files"),
        (WAVS, empty, f"--heldout-dir {empty} has no .wav or .flac files"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            learning.main(contract_args(train, heldout, tmp_path / "out"))
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_defaults_are_the_measured_cpu_settings(tmp_path: Path) -> None:
    args = learning.parse_args(contract_args(WAVS, WAVS, tmp_path / "out"))
    assert (args.lr_batches_gen, args.base_lr_gen, args.stage1_share) == (1500, 0.02, 0.3)
    assert (args.phase_loss_scale, args.phase_loss_weight_power, args.phase_loss_max_freq) == (
        90.0,
        0.5,
        2000.0,
    )


def test_discriminator_weights_reach_the_stage2_options(tmp_path: Path) -> None:
    """--mpd/--mrd-loss-scale set each discriminator's hinge, adversarial and feature-matching weights."""
    argv = [*contract_args(WAVS, WAVS, tmp_path / "out"), "--mpd-loss-scale", "5", "--mrd-loss-scale", "0"]
    args = learning.parse_args(argv)
    flags = learning.stage2_flags(args, learning.run_paths(args))
    scales = gan_options(finetune_parser().parse_args(flags)).loss_scales
    assert (scales.disc_loss_mp_scale, scales.gen_loss_mp_scale, scales.feat_map_loss_mp_scale) == (5, 5, 5)
    assert (scales.disc_loss_mr_scale, scales.gen_loss_mr_scale, scales.feat_map_loss_mr_scale) == (0, 0, 0)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--periodicity-peak-weight", "-1", "--periodicity-peak-weight must be a finite number >= 0"),
        ("--phase-loss-weight-power", "nan", "--phase-loss-weight-power must be a finite number >= 0"),
        ("--mel-recon-loss-scale", "-2", "--mel-recon-loss-scale must be a finite number >= 0"),
        ("--stft-loss-scale", "inf", "--stft-loss-scale must be a finite number >= 0"),
        ("--phase-loss-n-ffts", "512,abc", "argument --phase-loss-n-ffts: invalid comma-separated int value"),
        (
            "--phase-loss-n-ffts",
            "512,100000",
            "--duration 0.5 gives crops of 12000 samples, too short for the phase loss's 100000-sample STFT "
            "(--phase-loss-n-ffts): more than 50000 samples needed",
        ),
        ("--gan-name", "nosuchgan", "argument --gan-name: invalid choice: 'nosuchgan'"),
        ("--base-lr-gen", "0", "--base-lr-gen must be a finite number > 0"),
    ],
)
def test_bad_stage2_settings_are_usage_errors_before_any_work(
    tmp_path: Path, capsys, flag: str, value: str, message: str
) -> None:
    """A stage-2 weight the GAN would reject fails at start-up, not after the stage-1 minutes."""
    args = [*contract_args(WAVS, WAVS, tmp_path / "out"), flag, value]
    with pytest.raises(SystemExit) as exit_info:
        learning.main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # a stage-1-only run never builds stage 2, so its settings do not matter there
    assert learning.parse_args([*args, "--stage1-share", "1"]).stage1_share == 1


def test_bad_stage1_settings_are_usage_errors_unless_stage1_is_skipped(tmp_path: Path, capsys) -> None:
    args = [*contract_args(WAVS, WAVS, tmp_path / "out"), "--lr-batches", "0"]
    with pytest.raises(SystemExit) as exit_info:
        learning.main(args)
    assert exit_info.value.code == 2
    assert "stage-1 settings: --lr-batches must be a finite number > 0" in capsys.readouterr().err
    checkpoint = tmp_path / "stage1.pt"
    checkpoint.write_bytes(b"")
    assert learning.parse_args([*args, "--stage1-checkpoint", str(checkpoint)]).lr_batches == 0


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--minutes", "nan", "--minutes must be a finite number > 0, got nan"),
        ("--eval-every", "-1", "--eval-every must be a finite number > 0, got -1.0"),
        ("--pitch-seconds", "0", "--pitch-seconds must be a finite number > 0"),
        ("--avg-fraction", "-1", "--avg-fraction must be between 0 and 1, got -1.0"),
        ("--processes", "-1", "--processes must be >= 1"),
        ("--threads", "-3", "--threads must be >= 1"),
        ("--pitch", "7", "--pitch takes 0, 1 or 2, got 7"),
        ("--mrd-loss-scale", "-1", "--mrd-loss-scale must be a finite number >= 0, got -1.0"),
        ("--mpd-loss-scale", "inf", "--mpd-loss-scale must be a finite number >= 0, got inf"),
        ("--bandwidth", "nan", "--bandwidth must be a finite number > 0, got nan"),
        ("--model-name", "nosuch", "--model-name / --codec: unknown model name 'nosuch'"),
        ("--codec", "some/codec", "--codec some/codec is only for token-conditioned models"),
    ],
)
def test_bad_benchmark_settings_are_usage_errors(tmp_path: Path, capsys, flag: str, value: str, message: str):
    argv = [*contract_args(WAVS, WAVS, tmp_path / "out"), flag, value]  # the last --minutes counts
    with pytest.raises(SystemExit) as exit_info:
        learning.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_stage1_checkpoint_needs_a_stage2_share(tmp_path: Path, capsys) -> None:
    checkpoint = tmp_path / "stage1.pt"
    checkpoint.write_bytes(b"")
    argv = [*contract_args(WAVS, WAVS, tmp_path / "out"), "--stage1-checkpoint", str(checkpoint)]
    with pytest.raises(SystemExit):
        learning.parse_args([*argv, "--stage1-share", "1"])
    assert "would train neither stage" in capsys.readouterr().err


@pytest.mark.parametrize("share", ["-0.1", "1.5", "nan"])
def test_stage1_share_must_be_a_fraction(tmp_path: Path, capsys, share: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        learning.parse_args([*contract_args(WAVS, WAVS, tmp_path / "out"), "--stage1-share", share])
    assert exit_info.value.code == 2
    assert "--stage1-share must be between 0 and 1" in capsys.readouterr().err


def test_mean_metrics_ignores_nan_and_keeps_all_nan_silently() -> None:
    rows = [dict.fromkeys(learning_eval.METRICS, math.nan) for _ in range(2)]
    rows[0]["pesq"], rows[1]["pesq"] = 2.0, 3.0
    rows[1]["stoi"] = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        means = learning_eval.mean_metrics(rows)
    assert means["pesq"] == 2.5 and means["stoi"] == 0.5
    assert math.isnan(means["vuv_f1"])
    assert all(math.isnan(v) for v in learning_eval.mean_metrics([]).values())


def test_batch_must_split_over_processes(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        learning.parse_args([*contract_args(WAVS, WAVS, tmp_path / "out"), "--processes", "3"])
    assert exit_info.value.code == 2
    assert "must split evenly" in capsys.readouterr().err
    args = learning.parse_args([*contract_args(WAVS, WAVS, tmp_path / "out"), "--processes", "2"])
    assert (args.processes, args.threads) == (2, max(1, learning.usable_cores() // 2))


def strict_json(name: str) -> None:
    raise AssertionError(f"results.json has {name}, which strict JSON parsers reject")


@pytest.mark.slow
def test_two_process_run_writes_the_contract_files(tmp_path: Path) -> None:
    """Both stages on 2 DDP processes (batch 2 each): rank 0's clock, evaluations, averages and files."""
    out = tmp_path / "out"
    argv = [
        "--train-dir", str(WAVS), "--heldout-dir", str(WAVS), "--minutes", "0.2", "--out", str(out),
        "--stage1-share", "0.5", "--eval-every", "0.05", "--processes", "2", "--threads", "1",
        "--batch-size", "4", "--pitch", "0", "--model-name", str(PARITY / "tiny_24k_config.json"),
        "--phase-loss-n-ffts", "256,512",
    ]  # fmt: skip
    # a subprocess, as a user runs it: main() configures logging for the whole process
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "learning.py"), *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(), parse_constant=strict_json)
    assert all(p["vuv_f1"] is None and p["pesq"] > 0 for p in results["points"])  # --pitch 0: null, not NaN
    assert set(results["baselines"]) == {"griffin_lim", "random_phase", "untrained"}
    systems = [p["system"] for p in results["points"]]
    assert {"stage1-1step", "stage1-2step", "stage1-4step", "stage2-4step"} <= set(systems)
    assert systems.count("stage2-4step") >= 2  # an interval point and the averaged model
    minutes = [p["minutes"] for p in results["points"]]
    assert minutes == sorted(minutes) and minutes[-1] >= 0.2
    assert results["final_checkpoint"] == str(out / "stage2-averaged.pt")
    assert "final_steps" not in results and results["settings"]["processes"] == "2"
    # both averaged files record their config (and stage 2 its step count), as save_averaged_model's do
    tiny = get_generator_config(str(PARITY / "tiny_24k_config.json"))
    model, config = get_model(checkpoint=out / "stage2-averaged.pt")
    assert config == tiny and model.default_n_timesteps == 4
    model, config = get_model(checkpoint=out / "stage1-averaged.pt")
    assert config == tiny and model.default_n_timesteps is None
    assert (out / "curve.png").stat().st_size > 0 and (out / "summary.md").is_file()
    assert "2 training process(es) x 1 torch thread(s), batch 2 per process" in (out / "log.txt").read_text()
