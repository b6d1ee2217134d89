"""Training options: flags generated from the option dataclasses keep the reference names and defaults."""

import argparse
import re
from pathlib import Path

import pytest
import soundfile as sf
import torch
from lhotse import AudioSource, Recording, RecordingSet

from flow2gan.bin import evaluate, finetune, pretrain, save_averaged_model, stream
from flow2gan.config import get_generator_config
from flow2gan.models.gan import GANLossScales
from flow2gan.training.manifests import check_manifest
from flow2gan.training.options import (
    check_inputs,
    common_options,
    finetune_parser,
    flow_matching_options,
    gan_options,
    pretrain_parser,
)

DATA = ["--train-recordings", "a.jsonl.gz,b.jsonl.gz", "--valid-recordings", "v.jsonl.gz"]


def wav_source(folder: Path) -> AudioSource:
    """A 1 s silent WAV in ``folder`` (the checks read the first 10 ms of a manifest's audio)."""
    sf.write(folder / "x.wav", torch.zeros(24000).numpy(), 24000)
    return AudioSource(type="file", channels=[0], source=str(folder / "x.wav"))


def write_manifests(folder: Path) -> None:
    """The manifests DATA names, each with one recording (1 s of silence)."""
    source = wav_source(folder)
    recording = Recording("x", [source], sampling_rate=24000, num_samples=24000, duration=1.0)
    for name in ("a.jsonl.gz", "b.jsonl.gz", "v.jsonl.gz"):
        RecordingSet.from_recordings([recording]).to_file(folder / name)


COMMON = {
    "world_size": 1,
    "master_port": 12354,
    "tensorboard": True,
    "start_epoch": 1,
    "seed": 42,
    "print_diagnostics": False,
    "inf_check": False,
    "save_every_n": 1,
    "average_period": 200,
    "use_fp16": False,
    "train_dls_weights": None,
    "test_recordings": None,
    "max_load_times": 3,
    "duration": 1.5,
    "train_num_workers": 4,
    "valid_num_workers": 1,
    "model_name": "mel_24k_base",
}


def test_pretrain_reference_defaults():
    args = pretrain_parser().parse_args(DATA)
    opts, fm = common_options(args), flow_matching_options(args)
    assert {k: getattr(opts, k) for k in COMMON} == COMMON
    assert (opts.num_epochs, opts.exp_dir, opts.batch_size) == (200, Path("./exp-pretrain"), 256)
    assert opts.train_recordings == ("a.jsonl.gz", "b.jsonl.gz") and opts.valid_recordings == ("v.jsonl.gz",)
    assert (fm.base_lr, fm.lr_batches, fm.save_infer_steps) == (0.035, 7500.0, (2, 4, 8))
    assert opts.dtype == "fp32"


def test_finetune_reference_defaults_and_loss_scales():
    args = finetune_parser().parse_args(DATA)
    opts, gan = common_options(args), gan_options(args)
    assert {k: getattr(opts, k) for k in COMMON} == COMMON
    assert (opts.num_epochs, opts.exp_dir, opts.batch_size) == (20, Path("./exp-finetune"), 64)
    assert (gan.generator_model_path, gan.base_lr_gen, gan.base_lr_disc) == (None, 0.002, 0.02)
    assert (gan.lr_batches_gen, gan.lr_batches_disc, gan.gan_name) == (
        20000,
        5000,
        "gan_multi_scale_mel_recon",
    )
    assert (gan.n_timesteps, gan.gen_start_batch_idx) == (1, 1000)
    assert gan.loss_scales == GANLossScales()
    scaled = gan_options(
        finetune_parser().parse_args([*DATA, "--mel-recon-loss-scale", "30", "--n-timesteps", "4"])
    )
    assert scaled.loss_scales.mel_recon_loss_scale == 30.0 and scaled.n_timesteps == 4


def test_reference_value_spellings():
    args = pretrain_parser().parse_args(
        [*DATA, "--use-fp16", "true", "--tensorboard", "no", "--train-dls-weights", "1,3"]
        + ["--test-recordings", "None", "--save-infer-steps", "4", "--master", "1234"]
    )
    opts = common_options(args)
    assert (opts.use_fp16, opts.dtype, opts.tensorboard, opts.master_port) == (True, "fp16", False, 1234)
    assert opts.train_dls_weights == (1.0, 3.0) and opts.test_recordings is None
    assert flow_matching_options(args).save_infer_steps == (4,)
    assert common_options(pretrain_parser().parse_args([*DATA, "--dtype", "bf16"])).dtype == "bf16"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-epochs", "0"], "--num-epochs must be a finite number >= 1, got 0"),
        (["--resume", "yes"], "--resume takes 'auto'"),
        (["--warmup-batches", "-1"], "--warmup-batches must be a finite number >= 0"),
        (["--duration", "0"], "--duration must be a finite number > 0"),
        (["--duration", "nan"], "--duration must be a finite number > 0, got nan"),
        (["--master-port", "70000"], "--master-port must be <= 65535, got 70000"),
        (["--train-dls-weights", "1,nan"], "--train-dls-weights must be finite, >= 0 and not all 0"),
        (["--train-dls-weights", "0,0"], "--train-dls-weights must be finite, >= 0 and not all 0"),
    ],
)
def test_invalid_values_exit_with_the_flag_name(flags, message):
    with pytest.raises(ValueError, match=message):
        common_options(pretrain_parser().parse_args([*DATA, *flags]))


@pytest.mark.parametrize(
    ("make", "build", "flag", "value"),
    [
        (pretrain_parser, flow_matching_options, "--base-lr", "0"),
        (pretrain_parser, flow_matching_options, "--lr-batches", "-7500"),
        (finetune_parser, gan_options, "--base-lr-gen", "inf"),
        (finetune_parser, gan_options, "--base-lr-disc", "-0.02"),
        (finetune_parser, gan_options, "--lr-batches-gen", "0"),
        (finetune_parser, gan_options, "--lr-batches-disc", "nan"),
    ],
)
def test_learning_rates_and_decay_constants_must_be_positive(make, build, flag, value):
    """A zero decay constant would divide by zero at the first step; a bad LR would fail deep in setup."""
    message = re.escape(f"{flag} must be a finite number > 0, got {float(value)}")
    with pytest.raises(ValueError, match=message):
        build(make().parse_args([*DATA, flag, value]))


@pytest.mark.parametrize(("main", "flag"), [(pretrain.main, "--base-lr"), (finetune.main, "--base-lr-gen")])
def test_training_clis_exit_with_usage_errors_for_bad_values(main, flag, tmp_path, capsys, monkeypatch):
    """Status 2 and the usage line, like argparse's own errors, and nothing written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*DATA, flag, "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and f"error: {flag} must be a finite number > 0, got 0.0" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("main", "extra", "message"),
    [
        (pretrain.main, [], "--train-recordings: 'a.jsonl.gz' does not exist"),
        (pretrain.main, ["--train-shar", "shards"], "--train-shar: 'shards' does not exist"),
        (
            pretrain.main,
            ["--test-recordings", "t.jsonl.gz"],
            "--test-recordings: 't.jsonl.gz' does not exist",
        ),
        (finetune.main, ["--generator-model-path", "g.pt"], "--generator-model-path: 'g.pt' does not exist"),
        (pretrain.main, ["--model-name", "nosuchmodel"], "--model-name: unknown model name 'nosuchmodel'"),
        (finetune.main, ["--model-name", "cfg.json"], "--model-name: config file cfg.json does not exist"),
        (
            pretrain.main,
            ["--seed", "1"],
            "--train-recordings: 'a.jsonl.gz' is empty or not a RecordingSet manifest",
        ),
    ],
)
def test_training_clis_check_their_inputs_before_writing(main, extra, message, tmp_path, capsys, monkeypatch):
    """A missing input is a usage error and no experiment folder is made (manifests are checked first)."""
    monkeypatch.chdir(tmp_path)
    manifests = ["a.jsonl.gz", "b.jsonl.gz", "v.jsonl.gz"] if extra else []
    for name in manifests:
        (tmp_path / name).touch()
    with pytest.raises(SystemExit) as exit_info:
        main([*DATA, *extra])
    assert exit_info.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == manifests


def test_input_checks_follow_the_resume_point(tmp_path, monkeypatch):
    """The stage-1 model is needed only when nothing is resumed; a resume point must exist."""
    monkeypatch.chdir(tmp_path)
    write_manifests(tmp_path)
    parse = finetune_parser().parse_args
    flags = [*DATA, "--generator-model-path", "gone.pt", "--model-name", "mel_24k_small", "--exp-dir", "exp"]

    def check(*extra: str) -> None:
        check_inputs(common_options(parse([*flags, *extra])), gan_options(parse(flags)))

    missing = "--generator-model-path: 'gone.pt' does not exist"
    for extra in ([], ["--resume", "auto"]):  # --resume auto with no checkpoint yet starts fresh
        with pytest.raises(ValueError, match=missing):
            check(*extra)
    (tmp_path / "exp").mkdir()
    gan_weights = {"generator.w": torch.zeros(2)}  # stage 2's model is the GAN wrapper
    torch.save({"model": gan_weights, "batch_idx_train": 7}, tmp_path / "exp" / "epoch-1.pt")
    check("--resume", "auto")
    check("--start-epoch", "2")
    with pytest.raises(
        ValueError, match="--resume auto picks the newest checkpoint itself: leave out --start"
    ):
        check("--resume", "auto", "--start-epoch", "2")
    with pytest.raises(ValueError, match="--start-epoch: cannot resume at epoch 3: exp/epoch-2.pt does not"):
        check("--start-epoch", "3")
    (tmp_path / "exp" / "epoch-2.pt").mkdir()
    with pytest.raises(
        ValueError, match="--start-epoch: cannot resume at epoch 3: exp/epoch-2.pt is not a f"
    ):
        check("--start-epoch", "3")
    (tmp_path / "exp" / "epoch-2.pt").rmdir()
    (tmp_path / "exp" / "epoch-2.pt").write_bytes(b"\x00" * 64)  # read before any start-up
    with pytest.raises(ValueError, match="--start-epoch: cannot read checkpoint exp/epoch-2.pt: it is not a"):
        check("--start-epoch", "3")
    check("--resume", "auto")  # skips the unreadable epoch-2.pt: epoch-1.pt can be resumed
    # a legacy-format (non-zip) file cannot be memory-mapped: it is read instead
    legacy = {"model": gan_weights, "batch_idx_train": 9}
    torch.save(legacy, tmp_path / "exp" / "epoch-2.pt", _use_new_zipfile_serialization=False)
    check("--start-epoch", "3")
    # a stage-1 checkpoint in a stage-2 folder: named, before any work; with auto when nothing else is left
    torch.save({"model": {"w": torch.zeros(2)}, "batch_idx_train": 7}, tmp_path / "exp" / "epoch-1.pt")
    stage1 = "exp/epoch-1.pt was saved by stage 1 (pretrain), which stage 2 (finetune) cannot resume"
    with pytest.raises(ValueError, match=re.escape(f"--start-epoch: {stage1}")):
        check("--start-epoch", "2")
    (tmp_path / "exp" / "epoch-2.pt").unlink()
    with pytest.raises(
        ValueError, match=re.escape("--resume auto: none of the 1 checkpoint(s) can be resumed")
    ):
        check("--resume", "auto")
    (tmp_path / "file").touch()
    for exp_dir in ("file", "file/sub"):
        with pytest.raises(ValueError, match=f"--exp-dir: '{exp_dir}' is not a folder or is inside a file"):
            check("--exp-dir", exp_dir)


def test_the_stage1_generator_must_be_a_weight_file(tmp_path, monkeypatch):
    """--generator-model-path is read (tensors left on disk) before any work when the run starts fresh."""
    monkeypatch.chdir(tmp_path)
    write_manifests(tmp_path)
    parse = finetune_parser().parse_args
    flags = [*DATA, "--model-name", "mel_24k_small", "--exp-dir", "exp", "--generator-model-path", "g.pt"]
    torch.save(torch.zeros(3), tmp_path / "g.pt")
    with pytest.raises(
        ValueError, match="--generator-model-path: checkpoint g.pt holds a Tensor, expected a d"
    ):
        check_inputs(common_options(parse(flags)), gan_options(parse(flags)))
    torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / "g.pt")
    check_inputs(common_options(parse(flags)), gan_options(parse(flags)))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train-dls-weights", "1,2,3"], "--train-dls-weights: 3 weights for 2 training loaders"),
        (["--device", "foo"], "--device: "),
        (
            ["--codec", "facebook/encodec_24khz"],
            "--codec facebook/encodec_24khz is only for token-conditioned",
        ),
        (["--model-name", "encodec_24k_small"], "a token-conditioned model needs --codec"),
    ],
)
def test_input_checks_cover_loader_weights_device_and_codec(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    for name in ("a.jsonl.gz", "b.jsonl.gz", "v.jsonl.gz"):
        (tmp_path / name).touch()
    args = pretrain_parser().parse_args([*DATA, *extra])
    with pytest.raises(ValueError, match=re.escape(message)):
        check_inputs(common_options(args), flow_matching_options(args))


def test_crops_must_be_longer_than_half_of_every_stft_of_the_stage(tmp_path, monkeypatch):
    """The check mirrors the front-ends' and losses' own: the longest frame in use decides, named."""
    monkeypatch.chdir(tmp_path)
    write_manifests(tmp_path)
    no_mrd = ["--disc-loss-mr-scale", "0", "--gen-loss-mr-scale", "0", "--feat-map-loss-mr-scale", "0"]

    def check(main: str, samples: int, *extra: str) -> None:
        parser = finetune_parser() if main == "finetune" else pretrain_parser()
        args = parser.parse_args([*DATA, "--duration", str(samples / 24000), *extra])
        check_inputs(
            common_options(args), (gan_options if main == "finetune" else flow_matching_options)(args)
        )

    check("pretrain", 513)
    with pytest.raises(
        ValueError, match="crops of 512 samples, too short for the mel front-end's 1024-sample"
    ):
        check("pretrain", 512)
    check("finetune", 1025)
    with pytest.raises(ValueError, match="the mel reconstruction loss's 2048-sample STFT \\(--gan-name\\)"):
        check("finetune", 1024)
    single = ["--gan-name", "gan_single_scale_mel_recon", *no_mrd]
    check("finetune", 513, *single)
    check("finetune", 961, *single, "--periodicity-loss-scale", "1")
    with pytest.raises(
        ValueError, match="periodicity loss's 960-sample window \\(--periodicity-loss-scale\\): more"
    ):
        check("finetune", 960, *single, "--periodicity-loss-scale", "1")
    with pytest.raises(ValueError, match="phase loss's 4096-sample STFT \\(--phase-loss-n-ffts\\)"):
        check("finetune", 1025, "--phase-loss-scale", "1", "--phase-loss-n-ffts", "512,4096")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "a config is a JSON object of fields, got list"),
        ("{", "Expecting property name"),
        ('{"mel_hop_length": "256"}', ""),  # a field of the wrong type fails in the config's own checks
    ],
)
def test_a_bad_json_config_is_named(tmp_path, content, message):
    config = tmp_path / "cfg.json"
    config.write_text(content)
    with pytest.raises(ValueError, match=f"config file {re.escape(str(config))}: {message}"):
        get_generator_config(str(config))


@pytest.mark.parametrize("steps", ["0", "2,-1"])
def test_save_infer_steps_must_be_step_counts(steps):
    with pytest.raises(ValueError, match="--save-infer-steps takes Euler step counts >= 1"):
        flow_matching_options(pretrain_parser().parse_args([*DATA, "--save-infer-steps", steps]))


def test_loss_weight_errors_name_the_flag():
    with pytest.raises(ValueError, match="--phase-loss-scale must be a finite number >= 0, got -1.0"):
        gan_options(finetune_parser().parse_args([*DATA, "--phase-loss-scale", "-1"]))


def test_unknown_gan_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune_parser().parse_args([*DATA, "--gan-name", "nosuchgan"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nosuchgan'" in capsys.readouterr().err


@pytest.mark.parametrize("make", [pretrain_parser, finetune_parser, save_averaged_model.parser])
def test_every_flag_has_help_without_spec_references(make):
    parser: argparse.ArgumentParser = make()
    for action in parser._actions:
        assert action.help, action.option_strings
    assert "SPEC" not in parser.format_help() and "§" not in parser.format_help()


@pytest.mark.parametrize(
    "make",
    [
        pretrain_parser,
        finetune_parser,
        save_averaged_model.parser,
        evaluate.build_parser,
        stream.build_parser,
    ],
)
def test_help_states_each_default_once(make):
    text = " ".join(make().format_help().split())
    assert (
        "(default: None)" not in text
        and "(default: )" not in text
        and not re.search(r"\(default[^)]*\) \(default", text)
    )
    assert "(default: " in text  # the ones that have a value are still shown


def test_check_manifest_reads_the_first_record(tmp_path):
    write_manifests(tmp_path)
    check_manifest(tmp_path / "a.jsonl.gz")
    (tmp_path / "empty.jsonl.gz").touch()
    (tmp_path / "text.jsonl").write_text("not json\n")
    (tmp_path / "cut.jsonl").write_text('{"id": "c", "start": 0, "duration": 1, "channel": 0}\n')
    for name in ("empty.jsonl.gz", "text.jsonl", "cut.jsonl"):
        with pytest.raises(ValueError, match=f"'{tmp_path / name}' is"):
            check_manifest(tmp_path / name)


def test_check_manifest_reads_the_first_recordings_audio(tmp_path, monkeypatch):
    """A manifest whose audio is gone or unreadable fails before any work, naming file and recording."""
    monkeypatch.chdir(tmp_path)
    source = AudioSource(type="file", channels=[0], source="wav/x.wav")  # relative, as a user may write
    rec = Recording("x", [source], sampling_rate=24000, num_samples=24000, duration=1.0)
    RecordingSet.from_recordings([rec]).to_file("m.jsonl.gz")
    with pytest.raises(ValueError, match=r"the audio file 'wav/x.wav' of recording 'x' does not exist \(rel"):
        check_manifest("m.jsonl.gz")
    (tmp_path / "wav" / "x.wav").mkdir(parents=True)
    with pytest.raises(ValueError, match="the audio file 'wav/x.wav' of recording 'x' is not a file \\(rel"):
        check_manifest("m.jsonl.gz")
    (tmp_path / "wav" / "x.wav").rmdir()
    (tmp_path / "wav" / "x.wav").write_text("not audio")
    with pytest.raises(
        ValueError, match=r"cannot read the audio of recording 'x' \('wav/x.wav'\): .*Format not recognised"
    ):
        check_manifest("m.jsonl.gz")
    sf.write(tmp_path / "wav" / "x.wav", torch.zeros(24000).numpy(), 24000)
    check_manifest("m.jsonl.gz")


def test_check_manifest_needs_a_recording_the_duration_filter_keeps(tmp_path):
    source = wav_source(tmp_path)
    short = [
        Recording(f"s{i}", [source], sampling_rate=24000, num_samples=1200, duration=0.05) for i in range(3)
    ]
    RecordingSet.from_recordings(short).to_file(tmp_path / "short.jsonl.gz")
    check_manifest(tmp_path / "short.jsonl.gz")  # a test manifest keeps every recording
    with pytest.raises(ValueError, match=r"no recording longer than 0\.1 s.*\(3 read, none longer\)"):
        check_manifest(tmp_path / "short.jsonl.gz", 0.1)
    long = Recording("l", [source], sampling_rate=24000, num_samples=24000, duration=1.0)
    RecordingSet.from_recordings([*short, long]).to_file(tmp_path / "mixed.jsonl.gz")
    check_manifest(tmp_path / "mixed.jsonl.gz", 0.1)
    # check_inputs applies the training filter to --train/--valid-recordings, before any start-up
    write_manifests(tmp_path)
    args = pretrain_parser().parse_args(
        [
            "--train-recordings",
            str(tmp_path / "short.jsonl.gz"),
            "--valid-recordings",
            str(tmp_path / "v.jsonl.gz"),
        ]
    )
    with pytest.raises(ValueError, match="--train-recordings: .*no recording longer than 0.1 s"):
        check_inputs(common_options(args), flow_matching_options(args))
