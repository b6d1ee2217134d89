"""Token-model training through the real CLIs with a locally saved random EnCodec (``--codec DIR``)."""

import random

import pytest
import torch
from conftest import REPO

from flow2gan import get_generator_config, get_model
from flow2gan.bin import finetune, infer, prepare_manifests, pretrain, save_averaged_model
from flow2gan.models.token_generator import TokenAudioGenerator, audio_front_end
from flow2gan.training.condition import load_tokenizer, make_generator

MODEL = "encodec_24k_small"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    path = tmp_path_factory.mktemp("manifests") / "all.jsonl.gz"
    assert prepare_manifests.main(["--wav-dir", str(REPO / "test_data" / "wav"), "--out", str(path)]) == 0
    return path


def args_for(manifest, exp_dir, epochs, codec_dir, *extra):
    return [
        *("--train-recordings", str(manifest), "--valid-recordings", str(manifest)),
        *("--model-name", MODEL, "--exp-dir", str(exp_dir), "--num-epochs", str(epochs)),
        *("--train-num-workers", "0", "--valid-num-workers", "0", "--tensorboard", "false"),
        *("--batch-size", "2", "--codec", str(codec_dir), *extra),
    ]


@pytest.mark.slow
def test_pretrain_finetune_and_get_model(manifest, codec_dir, tmp_path):
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert pretrain.main(args_for(manifest, pre, 1, codec_dir, "--average-period", "1")) == 0
    ckpt = torch.load(pre / "epoch-1.pt", weights_only=True)
    assert ckpt["codec"] == str(codec_dir)
    codebooks = load_tokenizer(str(codec_dir)).codebooks()
    torch.testing.assert_close(ckpt["model"]["code_embedding.codebooks"], codebooks, rtol=0, atol=0)
    average = ["--exp-dir", str(pre), "--epoch", "1", "--avg", "1", "--model-name", MODEL]
    average += ["--use-averaged-model", "false"]
    assert save_averaged_model.main(average) == 0
    stage1 = pre / "epoch-1-avg-1.pt"
    finetune_args = args_for(manifest, ft, 2, codec_dir, "--generator-model-path", str(stage1))
    finetune_args += ["--gan-name", "gan_small_multi_scale_mel_recon", "--gen-start-batch-idx", "1"]
    assert finetune.main([*finetune_args, "--n-timesteps", "2"]) == 0
    export = ["--exp-dir", str(ft), "--epoch", "2", "--avg", "1", "--model-name", MODEL, "--load-gan", "true"]
    assert save_averaged_model.main([*export, "--gan-name", "gan_small_multi_scale_mel_recon"]) == 0
    final = ft / "epoch-2-avg-1-use-avg-model-only-gen.pt"
    model, _ = get_model(model_name=MODEL, checkpoint=final)
    assert isinstance(model, TokenAudioGenerator) and model.default_n_timesteps == 2
    torch.testing.assert_close(model.code_embedding.codebooks, codebooks)
    codes = torch.randint(0, 1024, (1, 4, 10))
    out = model.infer(cond=codes, bandwidth=3.0, clamp_pred=True)
    assert out.shape == (1, 3200) and torch.isfinite(out).all()
    flags = ["--checkpoint", str(final), "--model-name", MODEL, "--load-gan", "false", "--num-workers", "0"]
    flags += ["--test-recordings", str(manifest), "--output-dir", str(tmp_path / "out"), "--exp-dir", str(ft)]
    flags += ["--root-path", str(REPO / "test_data" / "wav"), "--n-timesteps", "2", "--batch-size", "4"]
    assert infer.main([*flags, "--codec", str(codec_dir), "--bandwidth", "12"]) == 0
    assert len(list((tmp_path / "out").glob("*.wav"))) == 4
    with pytest.raises(SystemExit, match="needs a codec"):
        infer.main(flags)


def test_codec_option_errors(manifest, codec_dir, tmp_path, capsys):
    """A token model without --codec, or a mel model with one, is a usage error before any work."""
    mel_args = args_for(manifest, tmp_path, 1, codec_dir)
    mel_args[mel_args.index(MODEL)] = "mel_24k_small"
    for args, message in (
        (args_for(manifest, tmp_path, 1, codec_dir)[:-2], "needs --codec"),
        (mel_args, "only for token-conditioned models"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            pretrain.main(args)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_codec_condition_draws_bandwidths_and_checks_codebooks(codec_dir):
    generator = make_generator(get_generator_config(MODEL), str(codec_dir))
    condition = audio_front_end(generator, load_tokenizer(str(codec_dir)))
    random.seed(0)
    audio = 0.1 * torch.randn(2, 4000)
    counts = {condition(audio).shape[1] for _ in range(16)}
    assert counts == {2, 4, 8, 16}
    assert condition(audio).shape[-1] == 13  # ceil(4000 / 320)
    fixed = audio_front_end(generator.eval(), load_tokenizer(str(codec_dir)), bandwidth=3.0)
    assert {fixed(audio).shape[1] for _ in range(4)} == {4}
    with pytest.raises(ValueError, match="unsupported bandwidth 24"):
        audio_front_end(generator, load_tokenizer(str(codec_dir)), bandwidth=24.0)
    with torch.no_grad():
        generator.code_embedding.codebooks.add_(1.0)
    with pytest.raises(ValueError, match="code vectors differ"):
        audio_front_end(generator, load_tokenizer(str(codec_dir)))
    with pytest.raises(ValueError, match="only for token-conditioned"):
        audio_front_end(make_generator(get_generator_config("mel_24k_small"), None), fixed.tokenizer)
