"""Exact chunked inference: long mels in pieces, mathematically identical to the offline result.

Every layer of the generator is local in time, so an output sample depends only on a bounded
window of mel frames and start-noise samples. :func:`chunk_context` computes, from the config, how
many mel frames of context each chunk needs on either side so that the part it keeps is
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

The chunk margins are chosen so that corruption never reaches the kept centre of a chunk.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flow2gan.config import GeneratorConfig
from flow2gan.models.generator import MelAudioGenerator


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
    """Per chunk ``(start, end, keep_start, keep_end)`` in mel frames: input ``[start, end)``, kept part."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 mel frame, got {chunk_size}")
    bounds = []
    for keep_start in range(0, n_frames, chunk_size):
        keep_end = min(n_frames, keep_start + chunk_size)
        bounds.append((max(0, keep_start - context), min(n_frames, keep_end + context), keep_start, keep_end))
    return bounds


def infer_chunked(
    model: MelAudioGenerator,
    mel: Tensor,
    chunk_size: int,
    n_timesteps: int | None = None,
    clamp_pred: bool = False,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    context: int | None = None,
) -> Tensor:
    """Euler sampling chunk by chunk: log-mel (B, M, F) -> waveform (B, F * mel_hop), equal to ``infer``.

    The start noise (already scaled, (B, F * mel_hop)) is drawn once for the whole utterance exactly
    as ``model.infer`` draws it, unless given; each chunk of ``chunk_size`` mel frames is run with
    ``context`` frames on each side (default :func:`chunk_context`) and only its centre is kept, so
    activation memory depends on ``chunk_size + 2 * context``, not on ``F``.
    """
    n = model.resolve_n_timesteps(n_timesteps)
    mel = model.check_mel(mel)
    hop = model.config.mel_hop_length
    batch, _, n_frames = mel.shape
    n_samples = n_frames * hop
    noise = model.start_noise(mel, n_samples, noise, generator)
    if context is None:
        context = chunk_context(model.config, n)
    out = torch.empty(batch, n_samples, device=mel.device, dtype=noise.dtype)
    for start, end, keep_start, keep_end in chunk_bounds(n_frames, chunk_size, context):
        cond_enc = model.encode_cond(mel[..., start:end])
        prepared = model.prepare_condition(cond_enc, (end - start) * hop)
        y = model.sample(noise[:, start * hop : end * hop], prepared, n, clamp_pred=clamp_pred)
        offset = (keep_start - start) * hop
        out[:, keep_start * hop : keep_end * hop] = y[:, offset : offset + (keep_end - keep_start) * hop]
    return out
