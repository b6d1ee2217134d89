"""The N-step Euler sampler of flow matching and exact chunked inference, generic over the condition.

Everything here works with any model that implements :class:`ConditionedEstimator`, the small
protocol below (``MelAudioGenerator`` does; a token-conditioned model or a streaming wrapper only has to
provide the same members):

* ``check_cond(cond)``: validate a raw condition batch (B, C, F) (or one item (C, F)) and return it
  as (B, C, F); raises ``ValueError`` with the reason. For log-mels this is :func:`check_mel`, the
  one place where condition checks live;
* ``encode_cond(cond)``: the checked condition -> encoded condition (B, E, F), run once per call;
* ``prepare_condition(cond_enc, n_samples)``: everything that depends only on the condition (per
  branch, per block condition terms) for a waveform of ``n_samples``, reused by every Euler step;
* ``estimate_prepared(x, prepared, t, lengths, transforms)``: the endpoint (or velocity)
  prediction g(x_t, t | c) for x (B, T), t (B,) -> (B, T);
* ``chunk_context(n_timesteps)``: condition frames of context per chunk side that make chunked
  inference exact (see :func:`receptive_field_samples` for the generator's);
* attributes ``frame_hop`` (output samples per condition frame), ``init_noise_scale`` (std of the
  start noise), ``pred_x1`` (the estimator predicts the endpoint x1, else the velocity) and
  ``default_n_timesteps`` (the step count the loaded weights were fine-tuned for, or None).

Sampler (SPEC 1.2): grid ``t_k = k / N``, start ``x = init_noise_scale * eps`` of ``frames * hop``
samples (or ``max(lengths)``); for k < N: ``x1 = g(x, t_k | c)``, ``v = (x1 - x) / (1 - t_k)``,
``x <- x + v / N``; optional final clamp to [-1, 1].

Exact chunking: every layer of the generator is local in time, so an output sample depends only
on a bounded window of mel frames and start-noise samples. :func:`chunk_context` computes, from the
config, how many mel frames of context each chunk needs on either side so that the part it keeps is
mathematically identical to running the whole utterance at once (no lengths, no masking):

* condition encoder: ``in_proj`` (kernel 3) and the depthwise convs of its blocks reach
  ``1 + Le * (Ke // 2)`` mel frames; zero padding at a chunk edge corrupts that many frames;
* per branch ``i`` (hop ``h``, n_fft ``N``, upsampling ``f = mel_hop / h``): an STFT frame is exact
  when its window ``[m h - N/2, m h + N/2)`` avoids the reflect padding and the corrupted input
  samples; the upsampled condition is exact ``f`` times the encoder's reach from the edge (one
  frame more at the right edge, where a zero frame is appended, SPEC 2.8); the decoder's depthwise
  convs widen that by ``L * (K // 2)`` frames on the STFT path and ``(L - 1) * (K // 2)`` on the
  condition path (the condition enters after each block's conv); the iSTFT overlap-add then
  spreads a bad frame over ``N/2`` samples either side of its centre;
* each Euler step feeds the previous step's waveform back through the STFT, so the corrupted
  waveform margin grows step by step (the condition margin does not).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from flow2gan import validation
from flow2gan.config import GeneratorConfig

logger = logging.getLogger(__name__)


class ConditionedEstimator(Protocol):
    """What the sampler needs from a model (see the module docstring)."""

    default_n_timesteps: int | None

    @property
    def frame_hop(self) -> int:
        """Output samples per condition frame."""

    @property
    def init_noise_scale(self) -> float:
        """Standard deviation of the start noise."""

    @property
    def pred_x1(self) -> bool:
        """Whether the estimator predicts the endpoint x1 (else the velocity)."""

    def check_cond(self, cond: Tensor) -> Tensor:
        """Validated condition (B, C, F); ``ValueError`` with the reason otherwise."""

    def encode_cond(self, cond: Tensor) -> Tensor:
        """Condition (B, C, F) -> encoded condition (B, E, F)."""

    def prepare_condition(self, cond_enc: Tensor, n_samples: int) -> Any:
        """Condition-only terms for a waveform of ``n_samples``, reused across Euler steps."""

    def estimate_prepared(
        self,
        x: Tensor,
        cond: Any,
        t: Tensor,
        lengths: Tensor | None,
        transforms: nn.ModuleList | None = None,
    ) -> Tensor:
        """Prediction for x (B, T) at times t (B,) -> (B, T)."""

    def chunk_context(self, n_timesteps: int) -> int:
        """Condition frames of context per chunk side for exact chunked inference."""


# --- input checks: every check of a sampler input lives here ---------------------------------------


def waveform_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the waveform path (start noise, sampler state, STFT/iSTFT): fp32, or fp64 for fp64."""
    return torch.promote_types(dtype, torch.float32)


def tensor_kind(x: Tensor) -> str:
    """Kind letter of a tensor's dtype for :mod:`flow2gan.validation` (``f``, ``c``, ``b`` or ``i``)."""
    return validation.dtype_kind(x.is_complex(), x.is_floating_point(), x.dtype == torch.bool)


def check_mel(mel: Tensor, config: GeneratorConfig, dtype: torch.dtype | None = None) -> Tensor:
    """Validate a log-mel (B, M, F) or (M, F) against ``config`` and cast it to ``dtype``: (B, M, F).

    The torch adapter of :mod:`flow2gan.validation` (the contract shared with the ONNX wrapper):
    ``ValueError`` for a wrong type, dtype, shape, band or frame count, NaN/inf; a
    :class:`flow2gan.validation.MelConventionWarning` (once) for values below ``ln(1e-7)``.
    """
    if not isinstance(mel, Tensor):
        raise ValueError(f"mel must be a torch.Tensor, got {type(mel).__name__}")
    kind = tensor_kind(mel)
    shape = validation.check_mel_layout(mel.shape, kind, str(mel.dtype), config.n_mels, config.min_mel_frames)
    mel = mel.reshape(shape)
    validation.check_mel_values(bool(torch.isfinite(mel).all()), float(mel.min()))
    return mel if dtype is None else mel.to(dtype)


def check_lengths(lengths: Any, batch: int, n_frames: int, hop: int, device: torch.device) -> Tensor | None:
    """``audio_lens`` (a tensor, NumPy array or list of B lengths in samples) -> int64 (B,) on ``device``.

    The torch adapter of :func:`flow2gan.validation.check_audio_lens`: ``ValueError`` unless there is
    one integer length per item, each at most ``n_frames * hop``, the longest at least
    ``(n_frames - 1) * hop``. ``None`` stays ``None``.
    """
    if lengths is None:
        return None
    if isinstance(lengths, Tensor):
        facts = (tuple(lengths.shape), tensor_kind(lengths), str(lengths.dtype), lengths.reshape(-1).tolist())
    else:
        facts = validation.lengths_facts(lengths)
    checked = validation.check_audio_lens(*facts, batch=batch, n_frames=n_frames, hop=hop)
    return torch.tensor(checked, dtype=torch.int64, device=device)


def resolve_n_timesteps(
    requested: int | None,
    trained_for: int | None = None,
    on_mismatch: Literal["ignore", "warn", "error"] = "ignore",
    source: str = "the checkpoint",
) -> int:
    """The Euler step count to run: ``requested``, else ``trained_for``, else 1.

    ``trained_for`` is the step count the weights were fine-tuned for (SPEC 1.3: each released file
    must be run with its own N). A different ``requested`` count is ignored, logged as a warning, or
    a ``ValueError`` naming ``source``, as ``on_mismatch`` says. A count below 1 is a ``ValueError``.
    """
    n = requested if requested is not None else (trained_for or 1)
    if n < 1:
        raise ValueError(f"n_timesteps (--n-timesteps) must be >= 1, got {n}")
    if trained_for is not None and n != trained_for:
        message = f"{source} was fine-tuned for {trained_for} steps; running {n}"
        if on_mismatch == "error":
            raise ValueError(
                f"{source} was fine-tuned for {trained_for} steps; pass n_timesteps={trained_for} "
                f"(--n-timesteps {trained_for}), got {n}"
            )
        if on_mismatch == "warn":
            logger.warning("%s", message)
    return n


def output_length(model: ConditionedEstimator, n_frames: int, lengths: Tensor | None) -> int:
    """Samples generated for ``n_frames`` condition frames: ``n_frames * frame_hop``, or max(lengths)."""
    if lengths is not None:
        return int(lengths.max())
    return n_frames * model.frame_hop


def start_noise(
    model: ConditionedEstimator,
    like: Tensor,
    n_samples: int,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Scaled start noise (B, n_samples) on ``like``'s device (B = ``like.shape[0]``).

    ``like`` is the (encoded) condition. The waveform path runs in fp32 (fp64 for a double model)
    whatever the network's dtype (see ``BranchEstimator``), so the noise is fp32 for a float16 /
    bfloat16 model or integer codes. A given ``noise`` is the already-scaled start: checked
    (``ValueError`` unless floating point of shape (B, n_samples)) and cast to that dtype.
    """
    batch = like.shape[0]
    dtype = waveform_dtype(like.dtype) if like.is_floating_point() else torch.float32
    if noise is None:
        noise = torch.randn(batch, n_samples, generator=generator, device=like.device)
        return noise.to(dtype) * model.init_noise_scale
    validation.check_noise_layout(noise.shape, tensor_kind(noise), str(noise.dtype), batch, n_samples)
    return noise.to(dtype)


# --- the sampler ------------------------------------------------------------------------------------


def euler_sample(
    model: ConditionedEstimator,
    x: Tensor,
    prepared: Any,
    n_timesteps: int,
    lengths: Tensor | None = None,
    clamp_pred: bool = False,
    transforms: nn.ModuleList | None = None,
) -> Tensor:
    """Euler integration on the grid k / N from the start x (B, T) -> (B, T) (SPEC 1.2).

    ``transforms`` (one ``analyze``/``synthesize`` pair per branch) replace torch.stft/istft, e.g.
    the graph-export versions of :mod:`flow2gan.deploy`. Differentiable when gradients are enabled.
    """
    ts = torch.linspace(0, 1, n_timesteps + 1, device=x.device, dtype=x.dtype)
    dt = ts[1] - ts[0]
    batch = x.shape[0]
    for k in range(n_timesteps):
        pred = model.estimate_prepared(x, prepared, ts[k].expand(batch), lengths, transforms)
        velocity = (pred - x) / (1 - ts[k]) if model.pred_x1 else pred
        x = x + velocity * dt
    return x.clamp(-1.0, 1.0) if clamp_pred else x


def infer(
    model: ConditionedEstimator,
    cond: Tensor,
    lengths: Tensor | None = None,
    n_timesteps: int | None = None,
    clamp_pred: bool = False,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Condition (B, C, F) -> waveform (B, T), T = F * frame_hop (or max(lengths)).

    ``noise`` is the already-scaled start (B, T); ``n_timesteps=None`` uses the model's
    ``default_n_timesteps``, else 1. Errors: ``ValueError`` for a bad condition, noise or step count.
    """
    n = resolve_n_timesteps(n_timesteps, model.default_n_timesteps)
    cond_enc = model.encode_cond(cond)
    batch, _, n_frames = cond_enc.shape
    lengths = check_lengths(lengths, batch, n_frames, model.frame_hop, cond_enc.device)
    n_samples = output_length(model, n_frames, lengths)
    noise = start_noise(model, cond_enc, n_samples, noise, generator)
    return euler_sample(model, noise, model.prepare_condition(cond_enc, n_samples), n, lengths, clamp_pred)


def infer_chunked(
    model: ConditionedEstimator,
    cond: Tensor,
    chunk_size: int,
    n_timesteps: int | None = None,
    clamp_pred: bool = False,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    context: int | None = None,
) -> Tensor:
    """:func:`infer` (no lengths) ``chunk_size`` frames at a time: (B, C, F) -> (B, F * frame_hop).

    The start noise is drawn once for the whole utterance exactly as :func:`infer` draws it, unless
    given; each chunk is run with ``context`` frames on each side (default ``model.chunk_context``)
    and only its centre is kept, so the output equals :func:`infer`'s to float precision and
    activation memory depends on ``chunk_size + 2 * context``, not on ``F``.
    """
    n = resolve_n_timesteps(n_timesteps, model.default_n_timesteps)
    cond = model.check_cond(cond)
    hop = model.frame_hop
    batch, _, n_frames = cond.shape
    n_samples = n_frames * hop
    noise = start_noise(model, cond, n_samples, noise, generator)
    if context is None:
        context = model.chunk_context(n)
    out = torch.empty(batch, n_samples, device=cond.device, dtype=noise.dtype)
    for start, end, keep_start, keep_end in chunk_bounds(n_frames, chunk_size, context):
        cond_enc = model.encode_cond(cond[..., start:end])
        prepared = model.prepare_condition(cond_enc, (end - start) * hop)
        y = euler_sample(model, noise[:, start * hop : end * hop], prepared, n, clamp_pred=clamp_pred)
        offset = (keep_start - start) * hop
        out[:, keep_start * hop : keep_end * hop] = y[:, offset : offset + (keep_end - keep_start) * hop]
    return out


# --- receptive field of the generator: chunk margins ------------------------------------------------


def encoder_reach(config: GeneratorConfig) -> int:
    """Mel frames on each side that influence one condition-encoder output frame."""
    if not config.use_cond_encoder:
        return 0
    return 1 + config.cond_enc_num_layers * (config.cond_enc_conv_kernel_size // 2)


def _branch_margin(config: GeneratorConfig, branch: int, bad_samples: int) -> int:
    """Corrupted output samples at a chunk edge after one estimator call of one branch.

    ``bad_samples`` is the corrupted margin of the waveform fed to the estimator (0 at the first step).
    """
    hop = config.hop_lengths[branch]
    half_window = config.n_ffts[branch] // 2
    factor = config.mel_hop_length // hop
    reach = config.conv_kernel_sizes[branch] // 2
    depth = config.num_layers[branch]
    stft_bad_frames = math.ceil((bad_samples + half_window) / hop)
    cond_bad_frames = factor * encoder_reach(config) + 1
    bad_frames = max(stft_bad_frames + depth * reach, cond_bad_frames + (depth - 1) * reach)
    return (bad_frames - 1) * hop + half_window


def receptive_field_samples(config: GeneratorConfig, n_timesteps: int) -> int:
    """Samples at an interior chunk edge that differ from offline after ``n_timesteps`` Euler steps."""
    bad = 0
    for _ in range(n_timesteps):
        bad = max(bad, *(_branch_margin(config, i, bad) for i in range(len(config.n_ffts))))
    return bad


def chunk_context(config: GeneratorConfig, n_timesteps: int) -> int:
    """Mel frames of context per chunk side that make chunked inference exact."""
    return math.ceil(receptive_field_samples(config, n_timesteps) / config.mel_hop_length)


def chunk_bounds(n_frames: int, chunk_size: int, context: int) -> list[tuple[int, int, int, int]]:
    """Per chunk ``(start, end, keep_start, keep_end)`` in frames: input ``[start, end)``, kept part.

    ``ValueError`` when ``chunk_size`` < 1.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 mel frame, got {chunk_size}")
    bounds = []
    for keep_start in range(0, n_frames, chunk_size):
        keep_end = min(n_frames, keep_start + chunk_size)
        bounds.append((max(0, keep_start - context), min(n_frames, keep_end + context), keep_start, keep_end))
    return bounds
