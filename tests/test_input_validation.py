"""Every entry point checks its input the same way (flow2gan.validation): the PyTorch API, the
onnxruntime wrapper and the tools. The cases come from the issue's examples with their right values."""

import math
import warnings

import numpy as np
import onnx
import pytest
import torch
from conftest import PARITY, REPO

from flow2gan import get_model, validation
from flow2gan.deploy import add_metadata
from flow2gan.onnx import OnnxVocoder
from flow2gan.validation import MelConventionWarning

CONFIG = str(PARITY / "tiny_24k_config.json")
CKPT = PARITY / "tiny_24k.pt"
HOP = 256
FRAMES = 40


@pytest.fixture(scope="module")
def model():
    return get_model(model_name=CONFIG, checkpoint=CKPT)[0]


@pytest.fixture(scope="module")
def mel():
    full = torch.load(REPO / "test_data" / "mel" / "us_male_fox.pt", weights_only=True)
    return torch.cat([full[..., :FRAMES], full[..., 50 : 50 + FRAMES]])  # (2, 100, 40)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(validation, "_warned", set())


@pytest.fixture(scope="module")
def vocoder(model, tmp_path_factory):
    """The wrapper over a stand-in graph (audio = noise) with the exported interface and metadata; the
    real exported sampler is run by tests/test_export.py. The checks happen before onnxruntime runs."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["noise"], ["audio"])],
        "stand_in",
        [
            onnx.helper.make_tensor_value_info("mel", onnx.TensorProto.FLOAT, ["batch", 100, "frames"]),
            onnx.helper.make_tensor_value_info("noise", onnx.TensorProto.FLOAT, ["batch", "samples"]),
        ],
        [onnx.helper.make_tensor_value_info("audio", onnx.TensorProto.FLOAT, ["batch", "samples"])],
    )
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    proto.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "stand_in.onnx"
    onnx.save(proto, str(path))
    add_metadata(path, {"mel_hop_length": HOP, "min_mel_frames": model.config.min_mel_frames})
    return OnnxVocoder(path, threads=1)


def infer(model, mel, **kwargs):
    with torch.inference_mode():
        return model.infer(mel, n_timesteps=1, generator=torch.Generator().manual_seed(0), **kwargs)


# --- audio_lens -----------------------------------------------------------------------------------


def test_audio_lens_in_frames_is_a_clear_error(model, mel):
    with pytest.raises(ValueError, match="lengths in samples. They look like frame counts"):
        infer(model, mel, audio_lens=torch.tensor([FRAMES, FRAMES - 5]))


def test_audio_lens_of_another_batch_size_is_an_error(model, mel):
    with pytest.raises(ValueError, match=r"audio_lens must have shape \(2,\)"):
        infer(model, mel, audio_lens=torch.tensor([FRAMES * HOP]))
    with pytest.raises(ValueError, match=r"audio_lens must have shape \(2,\)"):
        infer(model, mel, audio_lens=torch.tensor([[FRAMES * HOP, 100]]))


def test_audio_lens_longer_than_the_mel_is_an_error(model, mel):
    with pytest.raises(ValueError, match="cover at most 10240"):
        infer(model, mel, audio_lens=torch.tensor([10 * FRAMES * HOP, 100]))


def test_audio_lens_must_be_integers(model, mel):
    with pytest.raises(ValueError, match="integer lengths in samples, got torch.float32"):
        infer(model, mel, audio_lens=torch.tensor([10000.0, 5000.0]))
    with pytest.raises(ValueError, match="integer lengths in samples, got a sequence of float"):
        infer(model, mel, audio_lens=[10000.0, 5000])
    with pytest.raises(ValueError, match="must be >= 1"):
        infer(model, mel, audio_lens=[10000, 0])
    with pytest.raises(ValueError, match="got str"):
        infer(model, mel, audio_lens="10000")


def test_audio_lens_list_tuple_and_array_equal_a_tensor(model, mel):
    lens = [FRAMES * HOP - 100, 6000]
    ref = infer(model, mel, audio_lens=torch.tensor(lens))
    assert ref.shape == (2, FRAMES * HOP - 100)
    for given in (lens, tuple(lens), np.array(lens, dtype=np.int32), torch.tensor(lens, dtype=torch.int32)):
        assert torch.equal(infer(model, mel, audio_lens=given), ref)
    # The mel of L samples has 1 + L // hop frames: both ends of the range are accepted.
    assert infer(model, mel, audio_lens=[(FRAMES - 1) * HOP, 10]).shape == (2, (FRAMES - 1) * HOP)
    assert infer(model, mel, audio_lens=[FRAMES * HOP, 10]).shape == (2, FRAMES * HOP)


# --- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_mel_and_noise_of_other_dtypes_are_cast_to_the_model(model, mel, dtype):
    noise = 0.1 * torch.randn(2, FRAMES * HOP)
    with torch.inference_mode():
        ref = model.infer(mel.to(dtype).float(), n_timesteps=2, noise=noise.to(dtype).float())
        out = model.infer(mel.to(dtype), n_timesteps=2, noise=noise.to(dtype))
        assert out.dtype == torch.float32 and torch.equal(out, ref)
        assert torch.equal(
            model.infer(mel, n_timesteps=2, noise=noise.double()),
            model.infer(mel, n_timesteps=2, noise=noise),
        )


def test_integer_or_complex_mel_is_rejected(model, mel):
    with pytest.raises(ValueError, match="real floating-point values"):
        infer(model, mel.to(torch.int64))
    with pytest.raises(ValueError, match="real floating-point values"):
        infer(model, mel.to(torch.complex64))
    with pytest.raises(ValueError, match="noise must be floating point"):
        infer(model, mel, noise=torch.zeros(2, FRAMES * HOP, dtype=torch.int32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_model_runs_its_stfts_in_fp32(mel, dtype):
    """A model cast with .to(bfloat16) / .half() runs on CPU (the STFTs stay fp32, as under autocast)."""
    fp32 = get_model(model_name=CONFIG, checkpoint=CKPT)[0]
    reduced = get_model(model_name=CONFIG, checkpoint=CKPT)[0].to(dtype)
    noise = 0.1 * torch.randn(2, FRAMES * HOP)
    with torch.inference_mode():
        ref = fp32.infer(mel, n_timesteps=2, noise=noise)
        out = reduced.infer(mel, n_timesteps=2, noise=noise)
        chunked = reduced.infer_chunked(mel, chunk_size=16, n_timesteps=2, noise=noise)
        lens = reduced.infer(mel, audio_lens=[FRAMES * HOP, 5000], n_timesteps=2, noise=noise)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert 0 < (out - ref).abs().max() < 0.05
    assert (chunked - out).abs().max() < 0.05 and lens.shape == out.shape


# --- mel convention -------------------------------------------------------------------------------


def test_mels_of_other_conventions_warn_once_with_the_convention(model, mel):
    magnitude = mel.exp()
    magnitude[..., :3] = 0.0  # digital silence: ln(0 + 1e-9) = -20.7, 20 log10(1e-7) = -140
    decibels = 20 * torch.log10(torch.clamp(magnitude, min=1e-7))
    with pytest.warns(MelConventionWarning, match="looks like decibels") as record:
        infer(model, decibels)
        infer(model, decibels)
    assert len(record) == 1 and "natural log of an HTK-mel magnitude" in str(record[0].message)
    validation._warned.clear()
    tiny_floor = torch.log(magnitude + 1e-9)
    with pytest.warns(MelConventionWarning, match=r"ln\(x \+ 1e-9\)"):
        infer(model, tiny_floor)


def test_our_own_mels_do_not_warn(model, mel):
    silence_floor = torch.full((1, 100, FRAMES), math.log(1e-7))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MelConventionWarning)
        infer(model, mel)
        infer(model, silence_floor)
        infer(model, silence_floor.to(torch.bfloat16))  # -16.118 reads -16.125 in bfloat16


# --- the same checks in the onnxruntime wrapper ---------------------------------------------------


def error_of(call):
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


def test_onnx_wrapper_applies_the_same_checks(model, vocoder, mel):
    bad_mels = {
        "bands": mel[:, :80],
        "rank": mel[0, 0],
        "short": mel[..., :1],
        "nan": torch.full((1, 100, 10), float("nan")),
        "dtype": mel.to(torch.complex64),
    }
    for name, bad in bad_mels.items():
        torch_error = error_of(lambda bad=bad: infer(model, bad))
        onnx_error = error_of(lambda bad=bad: vocoder.infer(bad.numpy()))
        if name == "dtype":
            torch_error, onnx_error = torch_error.split(", got")[0], onnx_error.split(", got")[0]
        assert torch_error == onnx_error, name
    noise_error = error_of(lambda: vocoder.infer(mel.numpy(), noise=np.zeros((2, 100), np.float32)))
    assert noise_error == error_of(lambda: infer(model, mel, noise=torch.zeros(2, 100)))
    with pytest.warns(MelConventionWarning, match="looks like decibels"):
        vocoder.infer((20 * torch.log10(mel.exp())).numpy(), seed=0)


def test_onnx_wrapper_casts_other_float_dtypes(vocoder, mel):
    noise = (0.1 * torch.randn(2, FRAMES * HOP)).numpy()
    ref = vocoder.infer(mel.numpy(), noise)
    assert np.array_equal(vocoder.infer(mel.numpy().astype(np.float64), noise.astype(np.float64)), ref)
    assert vocoder.infer(mel.numpy().astype(np.float16), noise).dtype == np.float32
