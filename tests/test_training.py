"""Stage-1 training through the real CLIs on the project's test_data: learning, checkpoints, resume."""

import json
import logging
import re
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import PARITY, REPO

from flow2gan import get_model
from flow2gan.bin import finetune, infer, prepare_manifests, pretrain, save_averaged_model
from flow2gan.training import options
from flow2gan.training.experiment import restore_training_state

TINY = str(PARITY / "tiny_24k_config.json")
WAVS = REPO / "test_data" / "wav"
CKPT_KEYS = {
    "model",
    "optimizer",
    "scheduler",
    "grad_scaler",
    "sampler",
    "model_avg",
    "batch_idx_train",
    "cur_epoch",
}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("manifests")
    all_path = root / "all.jsonl.gz"
    assert prepare_manifests.main(["--wav-dir", str(WAVS), "--out", str(all_path)]) == 0
    one_dir = root / "one"
    one_dir.mkdir()
    first = sorted(WAVS.glob("*.wav"))[0]
    (one_dir / first.name).write_bytes(first.read_bytes())
    one_path = root / "one.jsonl.gz"
    assert prepare_manifests.main(["--wav-dir", str(one_dir), "--out", str(one_path)]) == 0
    return {"all": all_path, "one": one_path}


def common_args(train: Path, valid: Path, exp_dir: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "--train-recordings",
        str(train),
        "--valid-recordings",
        str(valid),
        "--model-name",
        TINY,
        "--exp-dir",
        str(exp_dir),
        "--num-epochs",
        str(epochs),
        "--train-num-workers",
        "0",
        "--valid-num-workers",
        "0",
        "--tensorboard",
        "false",
        *extra,
    ]


def logged_losses(exp_dir: Path) -> dict[int, float]:
    """Batch index -> current loss, from the training log."""
    text = "".join(p.read_text() for p in sorted((exp_dir / "log").glob("log-train-*")))
    return {int(b): float(v) for b, v in re.findall(r"batch (\d+), 0: current loss=([0-9.e+-]+)", text)}


@pytest.mark.slow
def test_pretrain_overfits_one_utterance(manifests, tmp_path):
    exp = tmp_path / "exp"
    args = common_args(manifests["one"], manifests["one"], exp, 100, "--batch-size", "1")
    assert (
        pretrain.main([*args, "--log-interval", "1", "--valid-interval", "1000", "--save-every-n", "50"]) == 0
    )
    losses = logged_losses(exp)
    assert sorted(losses) == list(range(100))
    first, last = sum(losses[b] for b in range(10)) / 10, sum(losses[b] for b in range(90, 100)) / 10
    assert last < 0.7 * first, (first, last)
    ckpt = torch.load(exp / "epoch-100.pt", weights_only=True)
    assert CKPT_KEYS <= set(ckpt)
    assert ckpt["batch_idx_train"] == 99 and ckpt["cur_epoch"] == 100
    assert ckpt["model_avg"]["cond_encoder.in_proj.weight"].dtype == torch.float32
    assert (exp / "epoch-50.pt").is_file() and not (exp / "epoch-49.pt").exists()


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(manifests, tmp_path):
    def run(exp: Path, epochs: int, *extra: str) -> None:
        args = common_args(manifests["all"], manifests["all"], exp, epochs, "--batch-size", "2")
        assert pretrain.main([*args, "--average-period", "2", "--log-interval", "1", *extra]) == 0

    run(tmp_path / "full", 3, "--keep-last-k", "2")
    assert sorted(p.name for p in (tmp_path / "full").glob("epoch-*.pt")) == ["epoch-2.pt", "epoch-3.pt"]
    run(tmp_path / "split", 1)
    run(tmp_path / "split", 3, "--start-epoch", "2")
    full = torch.load(tmp_path / "full" / "epoch-3.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "epoch-3.pt", weights_only=True)
    assert full["batch_idx_train"] == split["batch_idx_train"] == 5
    for key in ("model", "model_avg"):
        for name, value in full[key].items():
            torch.testing.assert_close(split[key][name], value, rtol=0, atol=0, msg=f"{key}.{name}")
    assert logged_losses(tmp_path / "full") == logged_losses(tmp_path / "split")
    run(tmp_path / "split", 4, "--resume", "auto")
    assert torch.load(tmp_path / "split" / "epoch-4.pt", weights_only=True)["batch_idx_train"] == 7


@pytest.mark.parametrize(
    ("epoch_file", "message"),
    [
        (None, "cannot resume at epoch 3: {exp}/epoch-2.pt does not exist"),
        # an exported generator copied in by hand: weights, but no training state
        ("export", "{exp}/epoch-2.pt has no batch_idx_train (an int): not a checkpoint of rank 0"),
        ("tensor-model", "{exp}/epoch-2.pt has no model (a state dict), batch_idx_train (an int)"),
    ],
)
def test_resume_needs_a_training_checkpoint(manifests, tmp_path, capsys, epoch_file, message):
    """--start-epoch names the epoch file it cannot resume from before any work (no KeyError later)."""
    if epoch_file == "export":
        (tmp_path / "epoch-2.pt").write_bytes((PARITY / "tiny_24k.pt").read_bytes())
    elif epoch_file == "tensor-model":
        torch.save({"model": torch.zeros(3)}, tmp_path / "epoch-2.pt")
    args = common_args(manifests["all"], manifests["all"], tmp_path, 3, "--start-epoch", "3")
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(args)
    assert exit_info.value.code == 2
    assert "--start-epoch: " + message.format(exp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "log").exists()


def test_prepare_manifests_usage_errors(tmp_path, capsys):
    """A missing folder or a bad value exits with 2 before scanning; a folder without audio with 1."""
    out = ["--out", str(tmp_path / "m.jsonl.gz")]
    cases = [
        (["--wav-dir", str(tmp_path / "nope"), *out], f"--wav-dir {tmp_path / 'nope'} does not exist"),
        (["--wav-dir", str(WAVS), *out, "--repeat", "0"], "--repeat must be >= 1, got 0"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            prepare_manifests.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert prepare_manifests.main(["--wav-dir", str(tmp_path / "empty"), *out]) == 1
    assert not (tmp_path / "m.jsonl.gz").exists()


def test_resuming_weights_of_another_config_names_the_file():
    """Another config's weights (same names, other shapes) fail with the file named, not a size traceback."""
    model = torch.nn.Linear(2, 3)
    ckpt = {"model": {"weight": torch.zeros(4, 2), "bias": torch.zeros(4)}, "batch_idx_train": 1}
    with pytest.raises(
        ValueError, match=r"cannot resume from x/epoch-1.pt: .*shape mismatch.*weight \(4, 2\)"
    ):
        restore_training_state(ckpt, Path("x/epoch-1.pt"), model, None, {})


@pytest.mark.slow
def test_save_averaged_model_loads_with_get_model(manifests, tmp_path):
    exp = tmp_path / "exp"
    args = common_args(
        manifests["all"], manifests["all"], exp, 3, "--batch-size", "1", "--average-period", "2"
    )
    assert pretrain.main(args) == 0
    assert (
        save_averaged_model.main(["--exp-dir", str(exp), "--epoch", "3", "--avg", "2", "--model-name", TINY])
        == 0
    )
    out = exp / "epoch-3-avg-2-use-avg-model.pt"
    model, _ = get_model(model_name=TINY, checkpoint=out)
    assert set(torch.load(out, weights_only=True)) == {"model", "generator_config"}
    assert model.infer(torch.zeros(1, 100, 4)).shape == (1, 1024)
    plain = ["--exp-dir", str(exp), "--epoch", "3", "--avg", "2", "--use-averaged-model", "false"]
    assert save_averaged_model.main([*plain, "--model-name", TINY]) == 0
    get_model(model_name=TINY, checkpoint=exp / "epoch-3-avg-2.pt")


def test_nan_loss_saves_bad_model_and_stops(manifests, tmp_path, monkeypatch):
    from flow2gan.models.generator import MelAudioGenerator
    from flow2gan.training.guards import NonFiniteLossError

    monkeypatch.setattr(MelAudioGenerator, "fm_loss", lambda self, *a, **k: torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLossError, match="nan"):
        pretrain.main(common_args(manifests["all"], manifests["all"], tmp_path, 1))
    bad = torch.load(tmp_path / "bad-model-0.pt", weights_only=True)
    assert "model" in bad and bad["batch_idx_train"] == 0


def test_diagnostics_runs_five_batches(manifests, tmp_path):
    args = common_args(manifests["all"], manifests["all"], tmp_path, 2, "--batch-size", "1")
    assert pretrain.main([*args, "--print-diagnostics", "true"]) == 0
    log = next((tmp_path / "log").glob("log-train-*")).read_text()
    assert "diagnostics:" in log and "cond_encoder.in_proj:" in log
    assert not list(tmp_path.glob("epoch-*.pt"))


@pytest.mark.slow
def test_finetune_alternation_checkpoints_and_export(manifests, tmp_path):
    pre = tmp_path / "pre"
    assert pretrain.main(common_args(manifests["all"], manifests["all"], pre, 1, "--batch-size", "2")) == 0
    assert (
        save_averaged_model.main(
            [
                "--exp-dir",
                str(pre),
                "--epoch",
                "1",
                "--avg",
                "1",
                "--model-name",
                TINY,
                "--use-averaged-model",
                "false",
            ]
        )
        == 0
    )
    ft = tmp_path / "ft"
    args = common_args(manifests["all"], manifests["all"], ft, 3, "--batch-size", "2")
    args += [
        "--generator-model-path",
        str(pre / "epoch-1-avg-1.pt"),
        "--gan-name",
        "gan_small_multi_scale_mel_recon",
        "--gen-start-batch-idx",
        "2",
        "--n-timesteps",
        "2",
        "--log-interval",
        "1",
        "--average-period",
        "2",
    ]
    assert finetune.main(args) == 0
    log = "".join(p.read_text() for p in (ft / "log").glob("log-train-*"))
    kinds = dict(re.findall(r"batch (\d+), ([dg])_0: current", log))
    assert kinds == {"0": "d", "1": "d", "2": "d", "3": "g", "4": "d", "5": "g"}
    ckpt = torch.load(ft / "epoch-3.pt", weights_only=True)
    assert {"optimizer_disc", "scheduler_disc"} <= set(ckpt) and ckpt["n_timesteps"] == 2
    assert ckpt["scheduler_disc"]["batch"] == 4 and ckpt["scheduler"]["batch"] == 2
    assert any(k.startswith("discriminator.1.") for k in ckpt["model"])
    resumed = [
        *args[: args.index("--num-epochs")],
        "--num-epochs",
        "4",
        *args[args.index("--num-epochs") + 2 :],
    ]
    assert finetune.main([*resumed, "--start-epoch", "4"]) == 0
    # --mel-only-batches: generator-only batches first (mel loss alone), then the paper's schedule
    mel_first = [
        *args[: args.index("--exp-dir") + 1],
        str(tmp_path / "ft-mel"),
        *args[args.index("--exp-dir") + 2 :],
    ]
    assert finetune.main([*mel_first, "--mel-only-batches", "2", "--gen-start-batch-idx", "0"]) == 0
    log = "".join(p.read_text() for p in (tmp_path / "ft-mel" / "log").glob("log-train-*"))
    assert dict(re.findall(r"batch (\d+), ([dg])_0: current", log)) == {
        "0": "g", "1": "g", "2": "d", "3": "g", "4": "d", "5": "g"
    }  # fmt: skip
    assert "batch 0, g_0: current loss_g" in log and "batch 0, g_0: current gen_loss_mp" not in log
    assert torch.load(ft / "epoch-4.pt", weights_only=True)["batch_idx_train"] == 7
    export = [
        "--exp-dir",
        str(ft),
        "--epoch",
        "4",
        "--avg",
        "2",
        "--model-name",
        TINY,
        "--load-gan",
        "true",
        "--gan-name",
        "gan_small_multi_scale_mel_recon",
    ]
    assert save_averaged_model.main(export) == 0
    model, _ = get_model(model_name=TINY, checkpoint=ft / "epoch-4-avg-2-use-avg-model-only-gen.pt")
    assert model.default_n_timesteps == 2
    # the generator config, the stage and the GAN config come from the training checkpoint
    assert save_averaged_model.main(["--exp-dir", str(ft), "--epoch", "4", "--avg", "1"]) == 0
    stored = torch.load(ft / "epoch-4-avg-1-use-avg-model-only-gen.pt", weights_only=True)
    assert stored["n_timesteps"] == 2 and stored["generator_config"]["channels"] == [32, 24, 16]
    assert model.infer(torch.zeros(1, 100, 4)).shape == (1, 1024)

    pred = ft / "wav-epoch-4-avg-2-use-avg-model-pred-step-2"
    flags = ["--exp-dir", str(ft), "--epoch", "4", "--avg", "2", "--model-name", TINY, "--n-timesteps", "2"]
    flags += ["--gan-name", "gan_small_multi_scale_mel_recon", "--test-recordings", str(manifests["all"])]
    assert infer.main([*flags, "--root-path", str(WAVS), "--batch-size", "3", "--num-workers", "0"]) == 0
    for wav in WAVS.glob("*.wav"):
        assert sf.info(pred / wav.name).frames == sf.info(wav).frames


def test_infer_with_a_mistyped_exp_dir_leaves_no_folder(manifests, tmp_path, capsys):
    """The log file (and <exp-dir>/log) appears with the first record, not before the epoch check."""
    exp = tmp_path / "exp" / "finetnue"
    argv = ["--exp-dir", str(exp), "--epoch", "3", "--avg", "1", "--use-averaged-model", "false"]
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with pytest.raises(SystemExit) as exit_info:
            infer.main([*argv, "--test-recordings", str(manifests["all"])])
    finally:
        root.handlers = handlers  # drop the file handler main() added to this process's root logger
    assert exit_info.value.code == 2
    assert f"{exp}/epoch-3.pt does not exist" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


def test_infer_manifest_with_checkpoint(manifests, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)  # as the CLI's own set-up does outside pytest
    out = tmp_path / "out"
    flags = ["--checkpoint", str(PARITY / "tiny_24k.pt"), "--model-name", TINY, "--load-gan", "false"]
    flags += ["--test-recordings", str(manifests["all"]), "--root-path", str(WAVS), "--num-workers", "0"]
    assert infer.main([*flags, "--output-dir", str(out), "--exp-dir", str(tmp_path), "--seed", "1"]) == 0
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(p.name for p in WAVS.glob("*.wav"))
    (log,) = (tmp_path / "log").glob("log-infer-*")
    assert f"wrote {len(list(WAVS.glob('*.wav')))} files to {out}" in log.read_text()
    monkeypatch.chdir(tmp_path)
    # --checkpoint needs no --load-gan false; absolute source paths are not mirrored without --root-path.
    flat = tmp_path / "flat"
    rest = ["--test-recordings", str(manifests["all"]), "--num-workers", "0", "--exp-dir", str(tmp_path)]
    assert infer.main([*flags[:4], *rest, "--output-dir", str(flat)]) == 0
    assert sorted(p.relative_to(flat).as_posix() for p in flat.rglob("*.wav")) == sorted(
        p.name for p in WAVS.glob("*.wav")
    )
    assert not (tmp_path / "exp-finetune").exists()  # rejected arguments leave no log folder behind


def test_bad_epoch_files_and_manifests_are_usage_errors(manifests, tmp_path, capsys):
    """save_averaged_model and infer name the bad file or flag and exit with 2 instead of a traceback."""
    (tmp_path / "epoch-2.pt").touch()
    (tmp_path / "epoch-4.pt").write_bytes((PARITY / "tiny_24k.pt").read_bytes())  # weights of TINY
    (tmp_path / "epoch-5.pt").mkdir()
    torch.save(torch.zeros(3), tmp_path / "epoch-6.pt")
    torch.save({"model": torch.zeros(3)}, tmp_path / "epoch-7.pt")
    weights = torch.load(PARITY / "tiny_24k.pt", weights_only=True)["model"]
    for epoch in (8, 9):  # running averages but no batch index: a hand-made file
        torch.save({"model": weights, "model_avg": weights}, tmp_path / f"epoch-{epoch}.pt")
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    (tmp_path / "cuts.jsonl").write_text('{"id": "c", "sources": null}\n')

    def window(epoch: int, *extra: str) -> list[str]:
        return [
            "--exp-dir",
            str(tmp_path),
            "--epoch",
            str(epoch),
            "--avg",
            "1",
            "--use-averaged-model",
            "false",
            *extra,
        ]

    def infer_args(manifest: Path, *extra: str) -> list[str]:
        return window(2, "--test-recordings", str(manifest), *extra)

    average, vocode = save_averaged_model.main, infer.main
    cases = [
        (average, window(2), "epoch-2.pt: it is an empty file"),
        (average, window(3), "epoch-3.pt does not exist"),
        (average, window(5), "epoch-5.pt is a folder, not a weight file"),
        (average, [*window(2)[:5], "0"], "--avg must be >= 1"),
        (average, window(6), "epoch-6.pt holds a Tensor, expected a dict"),
        (average, window(7), "epoch-7.pt has no model (a state dict)"),
        (average, window(9, "--use-averaged-model", "true"), "epoch-8.pt has no batch_idx_train (an int)"),
        # weights of another config: the epoch file and where its config came from are named
        (average, window(4, "--model-name", "mel_24k_small"), "epoch-4.pt (--model-name mel_24k_small): "),
        (average, window(4), "epoch-4.pt (mel_24k_base: it records no config; pass --model-name): "),
        (
            average,
            window(4, "--model-name", TINY, "--load-gan", "true", "--gan-name", "x"),
            "unknown GAN config",
        ),
        (
            vocode,  # infer's --load-gan defaults to true (stage 2), a stage-1 folder needs false
            [*window(4, "--model-name", TINY), "--test-recordings", str(manifests["all"])],
            "epoch-4.pt holds a stage-1 (pretrain) generator, not the GAN of a stage-2 run: pass --load-gan",
        ),
        (vocode, infer_args(manifests["all"]), "epoch-2.pt: it is an empty file"),
        (vocode, infer_args(tmp_path / "none.jsonl"), "cannot read manifest"),
        (vocode, infer_args(tmp_path / "empty.jsonl"), "lists no recordings"),
        (vocode, infer_args(tmp_path / "bad.jsonl"), "cannot read manifest"),
        (vocode, infer_args(tmp_path / "cuts.jsonl"), "is not a RecordingSet manifest"),
        (vocode, infer_args(manifests["all"], "--batch-size", "0"), "--batch-size must be >= 1"),
        (
            vocode,
            infer_args(manifests["all"], "--output-dir", str(tmp_path / "bad.jsonl")),
            "is a file, not a",
        ),
    ]
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


def test_infer_fails_when_no_recording_could_be_vocoded(tmp_path, caplog, capsys):
    """Audio that is all missing is a usage error up front; audio that exists but cannot be read is
    skipped file by file, and a run that vocoded nothing exits with 1."""
    manifest = tmp_path / "gone.jsonl"
    source = {"type": "file", "channels": [0], "source": str(tmp_path / "gone.wav")}
    manifest.write_text(json.dumps({"id": "gone", "sources": [source]}) + "\n")
    flags = ["--checkpoint", str(PARITY / "tiny_24k.pt"), "--model-name", TINY, "--num-workers", "0"]
    flags += [
        "--test-recordings",
        str(manifest),
        "--output-dir",
        str(tmp_path / "out"),
        "--exp-dir",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) as exit_info:
        infer.main(flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # an absolute path: no hint about the current folder
    assert (
        f"none of the 1 audio files of {manifest} is a file: the first, '{tmp_path}/gone.wav', does not "
        "exist\n" in err
    )
    (tmp_path / "gone.wav").mkdir()
    with pytest.raises(SystemExit):
        infer.main(flags)
    assert "the first, '" + str(tmp_path / "gone.wav") + "', is not a file\n" in capsys.readouterr().err
    (tmp_path / "gone.wav").rmdir()
    (tmp_path / "gone.wav").write_text("not audio")
    assert infer.main(flags) == 1
    assert "none of the 1 recordings was vocoded" in caplog.text


def test_training_stops_when_no_recording_can_be_read(manifests, tmp_path, capsys, monkeypatch):
    """A manifest whose audio is gone is a usage error before any work; audio that goes missing after
    the start-up checks stops training with the reason instead of saving an untrained epoch."""
    gone = tmp_path / "gone.jsonl"
    source = {"type": "file", "channels": [0], "source": str(tmp_path / "gone.wav")}
    rec = {"id": "gone", "sources": [source], "sampling_rate": 24000, "num_samples": 24000, "duration": 1.0}
    gone.write_text(json.dumps(rec) + "\n")
    args = common_args(gone, manifests["one"], tmp_path / "exp", 1, "--batch-size", "1")
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(args)
    assert exit_info.value.code == 2
    assert f"the audio file '{tmp_path / 'gone.wav'}' of recording 'gone' does not" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()
    monkeypatch.setattr(options, "check_manifest", lambda *args, **kwargs: None)  # gone after the checks
    with pytest.raises(
        RuntimeError, match="epoch 1: all 1 batches were empty: no training recording could be"
    ):
        pretrain.main(args)
    assert not (tmp_path / "exp" / "epoch-1.pt").exists()


@pytest.mark.slow
def test_fp16_with_inf_check(manifests, tmp_path):
    args = common_args(manifests["all"], manifests["all"], tmp_path, 1, "--batch-size", "2")
    assert pretrain.main([*args, "--use-fp16", "true", "--inf-check", "true"]) == 0
    ckpt = torch.load(tmp_path / "epoch-1.pt", weights_only=True)
    assert ckpt["dtype"] == "fp16" and ckpt["grad_scaler"]["scale"] > 0
