"""Streaming vocoding: condition frames in as a TTS model produces them, final audio out, equal to offline.

Every output sample depends only on a bounded window of condition frames and start-noise samples
(``model.chunk_context``, :func:`flow2gan.sampling.chunk_context`, computed from the config and the step
count). So once ``lookahead_frames`` frames beyond a frame have been pushed, that frame's audio can no
longer change: the stream vocodes it with :func:`flow2gan.sampling.euler_sample`, with the same context
on the left as exact chunked inference uses, and returns it. Nothing is re-vocoded except that context:
each model call covers ``chunk_size`` new frames plus ``2 * lookahead_frames`` context frames, whatever
the utterance length. Any :class:`flow2gan.sampling.ConditionedEstimator` streams (log-mels for
``MelAudioGenerator``, EnCodec codes for ``TokenAudioGenerator``).

The start noise is drawn block by block (:func:`stream_noise`) from generators seeded with
``(seed, block index)``, so it does not depend on the utterance length, on how the frames were
pushed, or on ``chunk_size``; after :meth:`StreamingVocoder.flush`, ``start_noise`` returns it and

    torch.cat(outputs, -1) == model.infer(mel, noise=stream.start_noise, n_timesteps=N)

to float precision.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from flow2gan import sampling
from flow2gan.models.generator import MelAudioGenerator

NOISE_BLOCK_SAMPLES = 16384


def _block_seed(seed: int, index: int) -> int:
    """Seed of noise block ``index`` of stream ``seed``: a 32-bit BLAKE2b hash of ``"seed:index"``.

    32 bits because torch's CPU generator keeps only the low 32 bits of a seed (so ``seed + index``
    would make the blocks of neighbouring seeds coincide).
    """
    return int.from_bytes(hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=4).digest(), "little")


def stream_noise(
    seed: int,
    batch: int,
    start: int,
    end: int,
    scale: float,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Samples ``[start, end)`` of a stream's scaled start noise: (batch, end - start).

    Block ``k`` (samples ``[k * NOISE_BLOCK_SAMPLES, (k + 1) * NOISE_BLOCK_SAMPLES)``) is
    ``scale * torch.randn(batch, NOISE_BLOCK_SAMPLES)`` from a CPU generator seeded with
    :func:`_block_seed` ``(seed, k)``, so any range can be drawn without drawing what precedes it and the
    values do not depend on the device. Raises ``ValueError`` if ``end < start`` or ``start < 0``.
    """
    if start < 0 or end < start:
        raise ValueError(f"noise range must satisfy 0 <= start <= end, got [{start}, {end})")
    first, last = start // NOISE_BLOCK_SAMPLES, -(-end // NOISE_BLOCK_SAMPLES)
    blocks = [
        torch.randn(batch, NOISE_BLOCK_SAMPLES, generator=torch.Generator().manual_seed(_block_seed(seed, k)))
        for k in range(first, last)
    ]
    noise = torch.cat(blocks, dim=-1) if blocks else torch.zeros(batch, 0)
    offset = first * NOISE_BLOCK_SAMPLES
    return (noise[:, start - offset : end - offset] * scale).to(device=device, dtype=dtype)


class StreamingVocoder:
    """Incremental N-step vocoding of one utterance (or ``B`` utterances in lockstep).

    ``push(cond)`` takes the next condition frames, (C, k) or (B, C, k) (a log-mel: C = n_mels), and
    returns the audio (B, j * frame_hop) that is now final; ``flush()`` ends the utterance and returns the
    rest. Audio comes out ``chunk_size`` frames at a time, once ``lookahead_frames`` further frames have
    been pushed (the receptive field of the N-step sampler, ``model.chunk_context``), so a frame's audio
    is returned at most ``latency_frames = lookahead_frames + chunk_size - 1`` frames after it was
    pushed. Each model call runs ``chunk_size + 2 * lookahead_frames`` frames (fewer at the edges).

    Pushed frames are checked by ``model.check_cond``, as ``model.infer`` checks its input (same errors,
    raised by the push that brings them; the stream is then left unchanged). The first push fixes the
    batch size and device. The model must be in eval mode (branch dropout would make the output random).
    Work runs under ``torch.inference_mode``. A stream is used once: ``push`` after ``flush`` raises
    ``RuntimeError``. Errors: ``ValueError`` for ``chunk_size`` < 1 or ``n_timesteps`` < 1.
    """

    def __init__(
        self,
        model: MelAudioGenerator,
        n_timesteps: int | None = None,
        chunk_size: int = 16,
        seed: int = 0,
        clamp_pred: bool = False,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 frame, got {chunk_size}")
        self.model = model
        self.n_timesteps = sampling.resolve_n_timesteps(n_timesteps, model.default_n_timesteps)
        self.chunk_size = chunk_size
        self.seed = seed
        self.clamp_pred = clamp_pred
        self.hop = model.frame_hop
        self.lookahead_frames = model.chunk_context(self.n_timesteps)
        self.frames = 0
        self.emitted_frames = 0
        self.finished = False
        self._cond: Tensor | None = None
        self._cond_start = 0
        self._noise: Tensor | None = None
        self._noise_start = 0

    @property
    def lookahead_ms(self) -> float:
        """``lookahead_frames`` in milliseconds of audio."""
        return 1000.0 * self.lookahead_frames * self.hop / self.model.config.sampling_rate

    @property
    def latency_frames(self) -> int:
        """Most frames pushed after a frame before its audio is returned: lookahead + chunk - 1."""
        return self.lookahead_frames + self.chunk_size - 1

    @property
    def start_noise(self) -> Tensor:
        """The scaled start noise (B, frames * frame_hop) of everything pushed so far (see module doc)."""
        if self._cond is None:
            raise RuntimeError("nothing has been pushed yet")
        return self._draw(0, self.frames * self.hop)

    @torch.inference_mode()
    def push(self, cond: Tensor) -> Tensor:
        """Append frames (C, k) or (B, C, k); returns the newly final audio (B, j * frame_hop)."""
        if self.finished:
            raise RuntimeError("this stream was flushed; start a new StreamingVocoder for the next utterance")
        cond = self._check(cond)
        if self._cond is None:
            self._cond = cond
            self._noise = torch.zeros(cond.shape[0], 0, device=cond.device, dtype=self._noise_dtype(cond))
        else:
            self._cond = torch.cat([self._cond, cond], dim=-1)
        self.frames += cond.shape[-1]
        return self._emit(self.frames - self.lookahead_frames, final=False)

    @torch.inference_mode()
    def flush(self) -> Tensor:
        """End the utterance: the remaining audio (B, j * frame_hop); afterwards ``start_noise`` is complete.

        An utterance shorter than the generator's minimum raises the error ``model.infer`` raises for it.
        """
        if self.finished:
            raise RuntimeError("this stream was already flushed")
        if self._cond is None:
            raise ValueError("nothing was pushed: the generator needs at least one chunk of frames")
        if self.frames < self.model.config.min_mel_frames:
            self.model.check_cond(self._cond)
        out = self._emit(self.frames, final=True)
        self.finished = True
        return out

    def _check(self, cond: Tensor) -> Tensor:
        """``model.check_cond`` of a push, (B, C, k); a push may bring fewer frames than a call needs.

        ``check_cond`` also rejects inputs shorter than the generator's minimum, so a short push is checked
        repeated along time (every other check is per frame, so the verdict and message are the same).
        """
        min_frames = self.model.config.min_mel_frames
        if not isinstance(cond, Tensor) or cond.dim() not in (2, 3) or cond.shape[-1] >= min_frames:
            checked = self.model.check_cond(cond)
        elif cond.shape[-1] == 0:
            checked = cond if cond.dim() == 3 else cond.unsqueeze(0)
        else:
            repeats = -(-min_frames // cond.shape[-1])
            checked = self.model.check_cond(torch.cat([cond] * repeats, dim=-1))[..., : cond.shape[-1]]
        ours = self._cond
        if ours is not None and (checked.shape[0], checked.device) != (ours.shape[0], ours.device):
            raise ValueError(
                f"this stream has batch size {ours.shape[0]} on {ours.device}, "
                f"got a push of shape {tuple(checked.shape)} on {checked.device}"
            )
        return checked

    def _emit(self, upto: int, final: bool) -> Tensor:
        """Vocode frames [emitted, upto) in chunks (only whole chunks unless ``final``): (B, samples)."""
        assert self._cond is not None
        pieces = [self._noise.new_zeros(self._cond.shape[0], 0)]
        while upto - self.emitted_frames >= (1 if final else self.chunk_size):
            keep_start = self.emitted_frames
            keep_end = min(upto, keep_start + self.chunk_size)
            start = max(0, keep_start - self.lookahead_frames)
            end = min(self.frames, keep_end + self.lookahead_frames)
            pieces.append(self._vocode(start, end, keep_start, keep_end))
            self.emitted_frames = keep_end
            self._trim()
        return torch.cat(pieces, dim=-1)

    def _vocode(self, start: int, end: int, keep_start: int, keep_end: int) -> Tensor:
        """Run the sampler on frames [start, end) and return the audio of [keep_start, keep_end)."""
        assert self._cond is not None
        cond = self._cond[..., start - self._cond_start : end - self._cond_start]
        noise = self._noise_range(start * self.hop, end * self.hop)
        model = self.model
        prepared = model.prepare_condition(model.encode_cond(cond, check=False), noise.shape[-1])
        audio = sampling.euler_sample(model, noise, prepared, self.n_timesteps, clamp_pred=self.clamp_pred)
        offset = (keep_start - start) * self.hop
        return audio[:, offset : offset + (keep_end - keep_start) * self.hop]

    def _noise_range(self, start: int, end: int) -> Tensor:
        """Noise samples [start, end) (``start`` not yet trimmed), growing the block cache to ``end``."""
        assert self._noise is not None
        cached_end = self._noise_start + self._noise.shape[-1]
        if end > cached_end:
            grow_to = -(-end // NOISE_BLOCK_SAMPLES) * NOISE_BLOCK_SAMPLES
            self._noise = torch.cat([self._noise, self._draw(cached_end, grow_to)], dim=-1)
        return self._noise[:, start - self._noise_start : end - self._noise_start]

    def _draw(self, start: int, end: int) -> Tensor:
        """:func:`stream_noise` samples [start, end) for this stream's batch, dtype and device."""
        assert self._cond is not None
        scale = self.model.init_noise_scale
        return stream_noise(
            self.seed,
            self._cond.shape[0],
            start,
            end,
            scale,
            self._noise_dtype(self._cond),
            self._cond.device,
        )

    @staticmethod
    def _noise_dtype(cond: Tensor) -> torch.dtype:
        """The sampler's waveform dtype for this condition (fp32 unless fp64; fp32 for token codes)."""
        return sampling.waveform_dtype(cond.dtype) if cond.is_floating_point() else torch.float32

    def _trim(self) -> None:
        """Drop the frames and noise samples no future chunk needs (left of the next chunk's context)."""
        assert self._cond is not None
        keep_from = max(0, self.emitted_frames - self.lookahead_frames)
        self._cond = self._cond[..., keep_from - self._cond_start :]
        self._cond_start = keep_from
        assert self._noise is not None
        self._noise = self._noise[:, keep_from * self.hop - self._noise_start :]
        self._noise_start = keep_from * self.hop


@dataclass(frozen=True)
class StreamTiming:
    """Wall-clock figures of :func:`stream_frames`, in seconds; ``audio_s`` is the length of the output."""

    time_to_first_audio_s: float
    elapsed_s: float
    audio_s: float

    @property
    def rtf(self) -> float:
        """Real-time factor: compute seconds per second of audio (< 1 keeps up with playback)."""
        return self.elapsed_s / self.audio_s

    @property
    def xrt(self) -> float:
        """Seconds of audio per compute second (1 / rtf)."""
        return self.audio_s / self.elapsed_s


def stream_frames(
    stream: StreamingVocoder, cond: Tensor, frames_per_push: int = 1
) -> tuple[Tensor, StreamTiming]:
    """Push a whole condition (B, C, F) or (C, F) ``frames_per_push`` frames at a time, then flush.

    Frames are pushed as fast as the stream takes them (as from a TTS model faster than real time), so
    the time to first audio is the compute of the pushes up to the first returned sample. Returns the
    concatenated audio (B, F * frame_hop) and the timings (CUDA is synchronised before each reading).
    Raises ``ValueError`` for ``frames_per_push`` < 1 and whatever ``push``/``flush`` raise.
    """
    if frames_per_push < 1:
        raise ValueError(f"frames_per_push must be >= 1, got {frames_per_push}")
    sync = torch.cuda.synchronize if cond.device.type == "cuda" else (lambda: None)
    outs: list[Tensor] = []
    first = None
    sync()
    begin = time.perf_counter()
    for start in range(0, cond.shape[-1], frames_per_push):
        outs.append(stream.push(cond[..., start : start + frames_per_push]))
        if first is None and outs[-1].shape[-1] > 0:
            sync()
            first = time.perf_counter() - begin
    outs.append(stream.flush())
    sync()
    elapsed = time.perf_counter() - begin
    audio = torch.cat(outs, dim=-1)
    seconds = audio.shape[-1] / stream.model.config.sampling_rate
    return audio, StreamTiming(elapsed if first is None else first, elapsed, seconds)
