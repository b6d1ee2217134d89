"""Vocode every audio file or log-mel tensor of a folder: ``python -m flow2gan.bin.infer_dir``.

Inputs are chosen by suffix: audio (``.wav .flac .mp3 .ogg``: channels averaged, resampled to the
model rate) is turned into the model's log-mel; ``.pt`` files hold a log-mel tensor
``(1, n_mels, frames)`` or ``(n_mels, frames)``. ``--input-type`` is accepted for command-line
compatibility with the reference tool, which also reads both suffixes whatever it says. Each input
becomes ``<output-dir>/<same relative name>.wav`` (16-bit PCM at the model rate, written atomically);
hidden files are ignored, ``--recursive`` mirrors sub-folders. Existing outputs are skipped unless
``--overwrite``, so an interrupted run resumes where it stopped.

Output length is ``frames * mel_hop`` samples (1 to ``mel_hop`` samples longer than the source),
as in the reference, except with ``--batch-size`` > 1. The start noise of every file depends only on
``--seed`` and the file's relative path, so reruns, resumes and ordering do not change it, and
``--chunk-size`` (exact chunked inference, :mod:`flow2gan.sampling`) reproduces the unchunked output.

Batching (``--batch-size`` > 1): inputs are sorted by length and padded; the generator gets the true
lengths (``audio_lens``) and each output is cut to its input's length. As in the reference, the mel of
the padded batch and the unmasked condition encoder see the padding, so an item shorter than its
batch's longest comes out slightly different near its end than when run alone; the default
``--batch-size 1`` gives the exact single-utterance output.

A bad input (unreadable, empty, too short, NaN, wrong number of mel bands, a ``.pt`` that is not a
tensor) is reported by name with the reason and the run goes on; the exit code is 1 if any failed.

Token models (``--model-name encodec_24k_*``): audio files are encoded by the EnCodec of ``--codec``
at ``--bandwidth`` kbps (default 6) and vocoded from those codes (codec resynthesis); ``.pt`` files
hold integer codes ``(n_q, frames)`` or ``(1, n_q, frames)`` and need no codec (``--bandwidth``, when
given, must match their codebook count).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch
from torch import Tensor
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from flow2gan.audio import read_audio, resample, save_audio
from flow2gan.cli import optional_str, str2bool
from flow2gan.codec import EncodecTokenizer
from flow2gan.features import LOG_CLAMP
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import TokenAudioGenerator, audio_front_end
from flow2gan.pretrained import get_model, pretrained_info
from flow2gan.runtime import tune_malloc
from flow2gan.sampling import resolve_n_timesteps

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg"})
MEL_SUFFIX = ".pt"


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes; ``rel`` is its path relative to the input folder."""

    source: Path
    rel: Path
    output: Path

    @property
    def is_mel(self) -> bool:
        """Whether the file holds a log-mel tensor rather than audio."""
        return self.source.suffix.lower() == MEL_SUFFIX


@dataclass(frozen=True)
class Item:
    """A loaded input: mono audio (T,) at the model rate, or a log-mel (M, F)."""

    job: Job
    data: Tensor


@dataclass
class Summary:
    """Counts of the run and the reasons for failures."""

    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, job: Job, reason: str) -> None:
        """Record and log a failed input."""
        self.failed.append((job.rel.as_posix(), reason))
        logger.error("failed %s: %s", job.rel.as_posix(), reason)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (reference names and defaults, plus batching/resume/seed options)."""
    parser = argparse.ArgumentParser(
        prog="python -m flow2gan.bin.infer_dir",
        description="Vocode every audio file or log-mel .pt of a folder into .wav files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=optional_str, default=None, help="local weights file")
    parser.add_argument("--hf-model-name", type=optional_str, default=None, help="released model name")
    parser.add_argument("--model-name", default="mel_24k_base", help="registered config or JSON path")
    parser.add_argument("--n-timesteps", type=int, default=1, help="Euler steps (must match an HF model)")
    parser.add_argument("--chunk-size", type=int, default=-1, help="mel frames per chunk; <= 0: whole file")
    parser.add_argument("--input-type", choices=("audio", "mel"), default="audio", help="compatibility only")
    parser.add_argument("--input-dir", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=1, help="> 1: padded batches with true lengths")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    flag = {"type": str2bool, "nargs": "?", "const": True, "default": False}
    parser.add_argument("--recursive", **flag, help="also read sub-folders (mirrored in the output)")
    parser.add_argument("--overwrite", **flag, help="rewrite outputs that already exist")
    parser.add_argument("--seed", type=int, default=0, help="start-noise seed (combined with each path)")
    parser.add_argument(
        "--codec", type=optional_str, default=None, help="token models: EnCodec of audio inputs"
    )
    parser.add_argument("--bandwidth", type=float, default=None, help="token models: kbps (audio default 6)")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject inconsistent options with a usage error (exit code 2)."""
    if not args.input_dir.is_dir():
        parser.error(f"--input-dir {args.input_dir} is not a directory")
    if args.output_dir.resolve() == args.input_dir.resolve():
        parser.error("--output-dir must differ from --input-dir")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.chunk_size > 0 and args.batch_size > 1:
        parser.error("--chunk-size and --batch-size > 1 cannot be combined")
    if args.checkpoint is None:
        if args.hf_model_name is None:
            parser.error("give --checkpoint <file> or --hf-model-name <released model>")
        try:
            released = pretrained_info(args.hf_model_name).n_timesteps
            resolve_n_timesteps(args.n_timesteps, released, "error", args.hf_model_name)
        except ValueError as exc:
            parser.error(str(exc))
    else:
        try:
            resolve_n_timesteps(args.n_timesteps)
        except ValueError as exc:
            parser.error(str(exc))
        if args.hf_model_name is not None:
            logger.warning("--checkpoint given: ignoring --hf-model-name %s", args.hf_model_name)


def find_inputs(input_dir: Path, output_dir: Path, recursive: bool) -> list[Path]:
    """Sorted audio and ``.pt`` files (not hidden, not inside ``output_dir``) of the input folder."""
    candidates = input_dir.rglob("*") if recursive else input_dir.iterdir()
    out_root = output_dir.resolve()
    found = []
    for path in candidates:
        rel = path.relative_to(input_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in AUDIO_SUFFIXES | {MEL_SUFFIX}:
            continue
        if path.resolve().is_relative_to(out_root):
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(input_dir).as_posix())


def plan_jobs(args: argparse.Namespace, summary: Summary) -> list[Job]:
    """Jobs still to do: existing outputs are skipped (unless overwrite), name clashes fail."""
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    for source in find_inputs(args.input_dir, args.output_dir, args.recursive):
        rel = source.relative_to(args.input_dir)
        job = Job(source, rel, args.output_dir / rel.with_suffix(".wav"))
        if job.output in claimed:
            summary.fail(job, f"its output name {job.output.name} is already taken by {claimed[job.output]}")
            continue
        claimed[job.output] = rel
        if job.output.exists() and not args.overwrite:
            summary.skipped += 1
            continue
        jobs.append(job)
    return jobs


def length_key(job: Job) -> tuple[bool, float]:
    """Cheap sort key grouping audio and mel inputs, by duration (audio) or file size (mel)."""
    if job.is_mel:
        return True, float(job.source.stat().st_size)
    try:
        info = sf.info(str(job.source))
    except Exception:  # unreadable files fail later, when loaded, with their reason
        return False, 0.0
    return False, info.frames / info.samplerate


def make_batches(jobs: list[Job], batch_size: int) -> Iterator[list[Job]]:
    """Single files in order, or length-sorted batches of one input kind."""
    if batch_size > 1:
        jobs = sorted(jobs, key=length_key)
    batch: list[Job] = []
    for job in jobs:
        if batch and (len(batch) == batch_size or batch[0].is_mel != job.is_mel):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


def file_seed(seed: int, rel: Path) -> int:
    """Noise seed of one file: a 32-bit hash of the run seed and its relative path (CPU RNGs use 32 bits)."""
    return zlib.crc32(f"{seed}:{rel.as_posix()}".encode())


class DirVocoder:
    """Loads inputs, runs the generator (single, chunked or batched) and writes the outputs."""

    def __init__(
        self,
        model: MelAudioGenerator,
        args: argparse.Namespace,
        summary: Summary,
        codec: EncodecTokenizer | None = None,
    ) -> None:
        self.model = model
        self.config = model.config
        self.device = torch.device(args.device)
        self.n_timesteps = args.n_timesteps
        self.chunk_size = args.chunk_size
        self.batched = args.batch_size > 1
        self.seed = args.seed
        self.summary = summary
        cfg = self.config
        self.tokens = isinstance(model, TokenAudioGenerator)
        self.bandwidth = args.bandwidth
        self.cond_fn = None
        if codec is not None or not self.tokens:
            audio_bandwidth = 6.0 if args.bandwidth is None else args.bandwidth
            self.cond_fn = audio_front_end(model, codec, audio_bandwidth).to(self.device)
        self.min_frames = cfg.min_mel_frames
        self.min_samples = max(cfg.mel_n_fft // 2 + 1, (self.min_frames - 1) * cfg.mel_hop_length)
        self.resampled_rates: set[int] = set()

    def load(self, job: Job) -> Item:
        """Read and validate one input; ``ValueError`` with the reason if it is unusable."""
        if job.is_mel:
            return Item(job, self.load_mel(job.source))
        if self.cond_fn is None:
            raise ValueError("audio input to a token model needs --codec (EnCodec hub name or folder)")
        data, sr = read_audio(job.source)
        if sr != self.config.sampling_rate and sr not in self.resampled_rates:
            self.resampled_rates.add(sr)
            logger.info("resampling input audio from %d Hz to %d Hz", sr, self.config.sampling_rate)
        mono = resample(data.mean(axis=1), sr, self.config.sampling_rate)
        if mono.shape[0] < self.min_samples:
            raise ValueError(
                f"audio too short: {mono.shape[0]} samples at {self.config.sampling_rate} Hz "
                f"(at least {self.min_samples} needed)"
            )
        return Item(job, torch.as_tensor(mono, dtype=torch.float32))

    def load_mel(self, path: Path) -> Tensor:
        """A log-mel tensor file -> (M, F) float32, validated against the model."""
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many types for foreign or corrupt files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot load tensor file: {first_line}") from exc
        if self.tokens:
            mel = self.model.check_cond(obj, self.bandwidth)
        else:
            mel = self.model.check_cond(obj.float() if isinstance(obj, Tensor) else obj)
        if mel.shape[0] != 1:
            raise ValueError(f"holds a batch of {mel.shape[0]} mels, expected one")
        if mel.shape[-1] < self.min_frames:
            raise ValueError(f"mel has {mel.shape[-1]} frames, at least {self.min_frames} needed")
        return mel[0]

    def start_noise(self, items: list[Item], n_samples: int) -> Tensor:
        """Scaled start noise (B, n_samples), each row drawn from its file's own seed."""
        rows = []
        for item in items:
            gen = torch.Generator(device=self.device).manual_seed(file_seed(self.seed, item.job.rel))
            rows.append(torch.randn(n_samples, generator=gen, device=self.device))
        return torch.stack(rows) * self.config.init_noise_scale

    def mel_of(self, item: Item) -> Tensor:
        """Log-mel (1, M, F) of one item on the device."""
        data = item.data.to(self.device)
        return data.unsqueeze(0) if item.job.is_mel else self.cond_fn(data.unsqueeze(0))

    def vocode_single(self, item: Item) -> Tensor:
        """One utterance, no lengths -> (frames * mel_hop,)."""
        mel = self.mel_of(item)
        noise = self.start_noise([item], mel.shape[-1] * self.config.mel_hop_length)
        if self.chunk_size > 0:
            out = self.model.infer_chunked(
                mel, self.chunk_size, self.n_timesteps, clamp_pred=True, noise=noise
            )
        else:
            out = self.model.infer(mel, n_timesteps=self.n_timesteps, clamp_pred=True, noise=noise)
        return out[0]

    def vocode_batch(self, items: list[Item]) -> list[Tensor]:
        """Padded batch with true lengths -> one waveform per item, cut to its length."""
        hop = self.config.mel_hop_length
        if items[0].job.is_mel:
            frames = [item.data.shape[-1] for item in items]
            first = items[0].data
            fill = 0 if self.tokens else math.log(LOG_CLAMP)
            mel = torch.full((len(items), first.shape[0], max(frames)), fill, dtype=first.dtype)
            for row, item in enumerate(items):
                mel[row, :, : frames[row]] = item.data
            lengths = [f * hop for f in frames]
            mel = mel.to(self.device)
        else:
            lengths = [item.data.shape[-1] for item in items]
            audio = torch.zeros(len(items), max(lengths))
            for row, item in enumerate(items):
                audio[row, : lengths[row]] = item.data
            mel = self.cond_fn(audio.to(self.device))
        audio_lens = torch.tensor(lengths, device=self.device)
        noise = self.start_noise(items, max(lengths))
        out = self.model.infer(mel, audio_lens, self.n_timesteps, clamp_pred=True, noise=noise)
        return [out[row, :length] for row, length in enumerate(lengths)]

    def process(self, jobs: list[Job]) -> None:
        """Load, vocode and write one batch of jobs, recording every failure by file."""
        items = []
        for job in jobs:
            try:
                items.append(self.load(job))
            except ValueError as exc:
                self.summary.fail(job, str(exc))
        if not items:
            return
        try:
            outs = self.vocode_batch(items) if self.batched else [self.vocode_single(items[0])]
        except Exception as exc:  # keep going with the other files; the reason is reported
            for item in items:
                self.summary.fail(item.job, f"inference failed: {exc}")
            return
        for item, out in zip(items, outs, strict=True):
            try:
                save_audio(item.job.output, out, self.config.sampling_rate)
            except Exception as exc:  # e.g. disk full or permissions
                self.summary.fail(item.job, f"cannot write {item.job.output}: {exc}")
                continue
            self.summary.written += 1


def load_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> MelAudioGenerator:
    """The generator in eval mode on the chosen device; loading problems are usage errors."""
    try:
        model, _ = get_model(args.model_name, args.hf_model_name, args.checkpoint, device=args.device)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    model.eval()
    resolve_n_timesteps(args.n_timesteps, model.default_n_timesteps, "warn")
    return model


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code (1 if any input failed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    tune_malloc()
    model = load_model(parser, args)
    summary = Summary()
    jobs = plan_jobs(args, summary)
    try:
        codec = EncodecTokenizer(args.codec) if args.codec else None
        vocoder = DirVocoder(model, args, summary, codec)
    except (ValueError, ImportError, OSError) as exc:
        parser.error(str(exc))
    batches = list(make_batches(jobs, args.batch_size))
    with logging_redirect_tqdm(), torch.inference_mode(), tqdm(total=len(jobs), unit="file") as bar:
        for batch in batches:
            vocoder.process(batch)
            bar.update(len(batch))
    print(
        f"infer_dir: {summary.written} written, {summary.skipped} skipped, {len(summary.failed)} failed "
        f"-> {args.output_dir}"
    )
    for name, reason in summary.failed:
        print(f"  failed {name}: {reason}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
