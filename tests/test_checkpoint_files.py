"""Weight files users actually have: reference training checkpoints (``epoch-N.pt``) and foreign files."""

from pathlib import Path, PosixPath

import pytest
import soundfile as sf
import torch
from conftest import PARITY, REPO

from flow2gan import get_model
from flow2gan.bin import export as export_cli
from flow2gan.bin import infer_dir
from flow2gan.weights import UnsafeCheckpointError, read_checkpoint

CONFIG = str(PARITY / "tiny_24k_config.json")
TINY = PARITY / "tiny_24k.pt"


class NotAllowed:
    """Stands for any pickled class outside the allow-list."""


def reference_epoch_file(path: Path) -> Path:
    """A stage-2 ``epoch-N.pt`` laid out as the reference saves it (SPEC 5.5): GAN-wrapper weights,
    optimizer/scheduler/scaler states and every training parameter at the top level, ``exp_dir`` a Path."""
    sd = torch.load(TINY, weights_only=True)["model"]
    model = {f"generator.{k}": v for k, v in sd.items()}
    model["discriminator.0.discriminators.0.conv_post.weight"] = torch.zeros(1, 1024, 3, 1)
    ckpt = {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0002, "betas": (0.8, 0.99), "params": [0]}]},
        "scheduler": {"epoch": 3, "batch": 120},
        "grad_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "sampler": None,
        "model_avg": {k: v.double() for k, v in model.items()},
        "batch_idx_train": 119,
        "cur_epoch": 3,
        "exp_dir": PosixPath("exp-finetune"),
        "env_info": {"torch-version": "2.1.0", "hostname": "node1", "IP address": "10.0.0.1"},
        "n_timesteps": 2,
        "world_size": 1,
        "use_fp16": True,
        "train_disc": False,
    }
    torch.save(ckpt, path)
    return path


def test_reference_epoch_checkpoint_loads_without_trusting_it(tmp_path):
    path = reference_epoch_file(tmp_path / "epoch-3.pt")
    with pytest.raises(Exception, match="Unsupported global"):  # the plain weights-only load fails
        torch.load(path, weights_only=True)
    model, _ = get_model(model_name=CONFIG, checkpoint=path)
    reference, _ = get_model(model_name=CONFIG, checkpoint=TINY)
    assert model.default_n_timesteps == 2
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert str(read_checkpoint(path)["exp_dir"]) == "exp-finetune"


def test_infer_dir_and_export_read_reference_checkpoints(tmp_path):
    path = reference_epoch_file(tmp_path / "epoch-3.pt")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    sf.write(src / "a.wav", sf.read(REPO / "test_data/wav/us_male_fox.wav")[0][:6000], 24000)
    args = ["--checkpoint", str(path), "--model-name", CONFIG, "--device", "cpu", "--n-timesteps", "2"]
    assert infer_dir.main([*args, "--input-dir", str(src), "--output-dir", str(out)]) == 0
    assert (out / "a.wav").is_file()
    scripted = tmp_path / "s.pt"
    cli = ["--checkpoint", str(path), "--model-name", CONFIG, "--format", "torchscript"]
    assert export_cli.main([*cli, "--output", str(scripted)]) == 0
    assert scripted.is_file()


def make_foreign_files(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the error must contain)."""
    good = TINY.read_bytes()
    files = {
        "audio": (root / "voice.pt", "an audio file"),
        "torchscript": (root / "scripted.pt", "TorchScript archive"),
        "unsafe": (root / "pickled.pt", "NotAllowed"),
        "truncated": (root / "half.pt", "damaged, truncated"),
        "empty": (root / "empty.pt", "an empty file"),
        "json": (root / "config.pt", "a JSON file"),
    }
    sf.write(files["audio"][0], torch.zeros(2400).numpy(), 24000, format="WAV")
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(files["torchscript"][0]))
    torch.save({"model": {}, "extra": NotAllowed()}, files["unsafe"][0])
    files["truncated"][0].write_bytes(good[: len(good) // 2])
    files["empty"][0].write_bytes(b"")
    files["json"][0].write_text((PARITY / "tiny_24k_config.json").read_text())
    return files


def test_unreadable_files_say_what_they_are(tmp_path):
    for name, (path, words) in make_foreign_files(tmp_path).items():
        with pytest.raises(ValueError, match="cannot read checkpoint") as info:
            get_model(model_name=CONFIG, checkpoint=path)
        assert words in str(info.value), (name, str(info.value))
        assert str(path) in str(info.value)
    with pytest.raises(UnsafeCheckpointError, match="weights_only=False"):
        read_checkpoint(tmp_path / "pickled.pt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"another format\)$"):  # without torch's advice on weights_only
        read_checkpoint(tmp_path / "noise.pt")
    with pytest.raises(ValueError, match="is a folder, not a weight file"):
        read_checkpoint(tmp_path)


def test_clis_report_unreadable_checkpoints(tmp_path, capsys):
    files = make_foreign_files(tmp_path)
    path, words = files["torchscript"]
    src = tmp_path / "in"
    src.mkdir()
    argv = ["--checkpoint", str(path), "--model-name", CONFIG, "--device", "cpu"]
    for main, extra in (
        (infer_dir.main, ["--input-dir", str(src), "--output-dir", str(tmp_path / "out")]),
        (export_cli.main, ["--output", str(tmp_path / "x.onnx")]),
    ):
        with pytest.raises(SystemExit) as info:
            main([*(argv if main is infer_dir.main else argv[:4]), *extra])
        assert info.value.code == 2
        assert words in capsys.readouterr().err
