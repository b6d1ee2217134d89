"""The input contract of every vocoding entry point, checked in one place.

The PyTorch sampler (:mod:`flow2gan.sampling`), the onnxruntime wrapper (:mod:`flow2gan.onnx`, which
runs without torch) and, through them, every command-line tool apply these checks. The core checks
take plain facts (shape, dtype kind, a few numbers), so one implementation serves torch tensors and
NumPy arrays; this module imports NumPy only, and the NumPy adapters live here too (the torch adapters
are thin functions in :mod:`flow2gan.sampling`).

Contract (also in the README, "Use"):

* ``mel``: ``(B, n_mels, F)`` or ``(n_mels, F)``, real floating point of any precision (cast to the
  model's dtype), finite, ``F >= min_frames``; the natural log of an HTK-mel *magnitude* spectrogram
  clamped at 1e-7 (:class:`flow2gan.features.LogMelSpectrogram`, SPEC 3.1), so no value is below
  ``ln(1e-7) = -16.12``. Lower values mean another convention (dB, another floor): a
  :class:`MelConventionWarning`, once per process, names it.
* ``audio_lens``: ``None`` or one integer length in samples per batch item (a tensor or array of
  shape ``(B,)``, or a list), each in ``[1, F * hop]``, the longest in ``[(F - 1) * hop, F * hop]``
  (the mel of ``L`` samples has ``1 + L // hop`` frames). The output then has ``max(audio_lens)``
  samples, else ``F * hop``.
* ``noise`` (the scaled start ``0.1 * N(0, 1)``): floating point of shape ``(B, T)``, ``T`` the output
  length.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

LOG_MEL_FLOOR = math.log(1e-7)
# Values down to the floor minus this are accepted silently: a legitimate floor of -16.118 stored in
# bfloat16 reads -16.125 (bf16 spacing at 16 is 0.125).
FLOOR_TOLERANCE = 0.25
DB_LIKE = -40.0
MEL_CONVENTION = (
    "flow2gan expects the natural log of an HTK-mel magnitude spectrogram clamped at 1e-7 "
    "(flow2gan.features.LogMelSpectrogram / models.modules.LogMelSpectrogram); a mel made another way "
    "(log10, dB, another floor, Slaney mel, power spectrogram) vocodes to noise"
)

_warned: set[str] = set()


class MelConventionWarning(UserWarning):
    """A log-mel whose values cannot come from flow2gan's front-end (issued once per process)."""


def dtype_kind(is_complex: bool, is_floating: bool, is_bool: bool) -> str:
    """NumPy-style kind letter of a dtype: ``f`` float, ``c`` complex, ``b`` bool, ``i`` integer."""
    if is_complex:
        return "c"
    if is_floating:
        return "f"
    return "b" if is_bool else "i"


def check_mel_layout(
    shape: Sequence[int], kind: str, dtype: str, n_mels: int, min_frames: int
) -> tuple[int, int, int]:
    """Shape and dtype checks of a mel: returns its (B, n_mels, F) shape, else ``ValueError``."""
    shape = tuple(int(s) for s in shape)
    if kind != "f":
        raise ValueError(f"mel must hold real floating-point values (a log-mel), got dtype {dtype}")
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"mel must have shape (B, n_mels, frames) or (n_mels, frames), got {shape}")
    if shape[1] != n_mels:
        raise ValueError(f"mel has {shape[1]} bands but this model expects n_mels={n_mels} (shape {shape})")
    if shape[0] < 1:
        raise ValueError(f"mel is an empty batch (shape {shape})")
    if shape[2] < min_frames:
        raise ValueError(f"mel has {shape[2]} frames, the generator needs at least {min_frames}")
    return shape


def check_mel_values(all_finite: bool, minimum: float) -> None:
    """Value checks of a mel: ``ValueError`` for NaN/inf, a :class:`MelConventionWarning` (once) for
    values below ``ln(1e-7)``, which flow2gan's front-end cannot produce."""
    if not all_finite:
        raise ValueError("mel contains NaN or inf values")
    if minimum < LOG_MEL_FLOOR - FLOOR_TOLERANCE:
        if minimum < DB_LIKE:
            guess = "looks like decibels (10 * log10 or 20 * log10 of a spectrogram)"
        else:
            guess = "looks like a log with a lower floor, e.g. ln(x + 1e-9) (floor -20.7)"
        warn_once(
            "mel_floor",
            f"mel values go down to {minimum:.2f}, below ln(1e-7) = {LOG_MEL_FLOOR:.2f}, the lowest value "
            f"flow2gan's front-end produces; this {guess}. {MEL_CONVENTION}.",
        )


def warn_once(key: str, message: str) -> None:
    """Issue a :class:`MelConventionWarning` the first time ``key`` is seen in this process."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, MelConventionWarning, stacklevel=3)


def lengths_facts(audio_lens: Any) -> tuple[tuple[int, ...], str, str, list]:
    """(shape, kind, dtype name, values) of ``audio_lens`` given as a list/tuple or a NumPy array."""
    if isinstance(audio_lens, np.ndarray):
        return audio_lens.shape, audio_lens.dtype.kind, str(audio_lens.dtype), audio_lens.reshape(-1).tolist()
    if isinstance(audio_lens, list | tuple):
        values = list(audio_lens)
        integral = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values)
        kinds = sorted({type(v).__name__ for v in values})
        return (len(values),), "i" if integral else "?", f"a sequence of {'/'.join(kinds)}", values
    raise ValueError(
        f"audio_lens must be an integer tensor, NumPy array or list of lengths in samples, "
        f"got {type(audio_lens).__name__}"
    )


def check_audio_lens(
    shape: Sequence[int], kind: str, dtype: str, values: list, batch: int, n_frames: int, hop: int
) -> list[int]:
    """Check lengths in samples against a batch of ``batch`` mels of ``n_frames`` frames (hop ``hop``).

    Returns the lengths as Python ints; ``ValueError`` naming the problem otherwise (see the module
    docstring for the rule).
    """
    shape = tuple(int(s) for s in shape)
    if kind not in ("i", "u"):
        raise ValueError(f"audio_lens must hold integer lengths in samples, got {dtype}")
    if shape != (batch,):
        raise ValueError(
            f"audio_lens must have shape ({batch},), one length per mel of the batch, got shape {shape}"
        )
    lengths = [int(v) for v in values]
    low, high = (n_frames - 1) * hop, n_frames * hop
    if min(lengths) < 1:
        raise ValueError(f"audio_lens must be >= 1 sample, got {lengths}")
    longest = max(lengths)
    if longest > high:
        raise ValueError(
            f"audio_lens has {longest} samples but the mel's {n_frames} frames cover at most "
            f"{high} (frames * hop {hop})"
        )
    if longest < low:
        hint = " They look like frame counts: multiply by the hop." if longest <= n_frames else ""
        raise ValueError(
            f"the longest audio_lens is {longest} samples, but a mel of {n_frames} frames comes from "
            f"{low} to {high} samples (L samples give 1 + L // {hop} frames); audio_lens are lengths in "
            f"samples.{hint}"
        )
    return lengths


def check_noise_layout(shape: Sequence[int], kind: str, dtype: str, batch: int, n_samples: int) -> None:
    """The start noise must be floating point of shape (batch, n_samples); else ``ValueError``."""
    shape = tuple(int(s) for s in shape)
    if kind != "f":
        raise ValueError(f"noise must be floating point, got dtype {dtype}")
    if shape != (batch, n_samples):
        raise ValueError(f"noise must have shape {(batch, n_samples)}, got {shape}")


def check_mel_array(mel: Any, n_mels: int, min_frames: int) -> np.ndarray:
    """NumPy adapter of the mel checks: array-like -> validated float32 array (B, n_mels, F)."""
    mel = np.asarray(mel)
    shape = check_mel_layout(mel.shape, mel.dtype.kind, str(mel.dtype), n_mels, min_frames)
    mel = mel.reshape(shape).astype(np.float32, copy=False)
    check_mel_values(bool(np.isfinite(mel).all()), float(mel.min()))
    return mel


def check_noise_array(noise: Any, batch: int, n_samples: int) -> np.ndarray:
    """NumPy adapter of the noise check: array-like -> validated float32 array (batch, n_samples)."""
    noise = np.asarray(noise)
    check_noise_layout(noise.shape, noise.dtype.kind, str(noise.dtype), batch, n_samples)
    return noise.astype(np.float32, copy=False)
