"""Vocoding many files: a folder of audio / log-mel files (:func:`vocode_dir`) or a recordings manifest
(:func:`vocode_manifest`), written as 16-bit WAVs at the model rate (atomically).

Folder inputs are chosen by suffix: audio (``.wav .flac .mp3 .ogg``: channels averaged, resampled to the
model rate) is turned into the model's condition; ``.pt`` (a tensor) and ``.npy`` (a NumPy array) files
hold a log-mel ``(1, n_mels, frames)`` or ``(n_mels, frames)``, checked like ``model.infer``'s input
(:mod:`flow2gan.validation`). Each input becomes ``<output_dir>/<same relative name>.wav``; hidden
files are ignored, ``recursive`` mirrors sub-folders; existing outputs are skipped unless ``overwrite``.
From audio, the output has the input's length (at the model rate) with or without batching or
chunking; from a mel, ``frames * mel_hop`` samples. The start noise of every file depends only on
``seed`` and the file's relative path, so reruns, resumes and ordering do not change it, and chunked
inference (``chunk_size`` > 0, :func:`flow2gan.sampling.infer_chunked`) reproduces the unchunked output.

Batching (``batch_size`` > 1): inputs are sorted by length and zero-padded
(:func:`flow2gan.audio.pad_batch`); the generator gets the true lengths and each output is cut to its
input's length. As in the reference, the condition of the padded batch and the unmasked condition
encoder see the padding, so an item shorter than its batch's longest comes out slightly different near
its end than when run alone.

A bad input (unreadable, empty, too short, NaN, wrong number of mel bands, a ``.pt`` that is not a
tensor) is recorded in the :class:`Summary` by name with the reason, and the run goes on.

Token models (``encodec_24k_*``): audio files are encoded by the given EnCodec ``codec`` at
``bandwidth`` kbps (default 6) and vocoded from those codes (codec resynthesis); ``.pt`` files hold
integer codes ``(n_q, frames)`` or ``(1, n_q, frames)`` and need no codec (``bandwidth``, when given,
must match their codebook count).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from flow2gan.audio import pad_batch, read_audio, save_audio, to_model_rate
from flow2gan.codec import EncodecTokenizer
from flow2gan.features import LOG_CLAMP
from flow2gan.models.generator import MelAudioGenerator
from flow2gan.models.token_generator import TokenAudioGenerator, audio_front_end

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg"})
MEL_SUFFIXES = frozenset({".pt", ".npy"})
SILENCE_RMS = 0.005  # manifest inputs quieter than this are not vocoded (reference behaviour)


@dataclass(frozen=True)
class VocodeOptions:
    """How :func:`vocode_dir` runs: Euler steps (resolved, >= 1), chunking, batching, seed, device."""

    n_timesteps: int = 1
    chunk_size: int = -1  # mel frames per chunk; <= 0: whole file
    batch_size: int = 1
    seed: int = 0
    recursive: bool = False
    overwrite: bool = False
    device: str = "cpu"
    bandwidth: float | None = None  # token models: EnCodec kbps (audio inputs default to 6)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size (--batch-size) must be >= 1, got {self.batch_size}")
        if self.chunk_size > 0 and self.batch_size > 1:
            raise ValueError("--chunk-size and --batch-size > 1 cannot be combined")


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes; ``rel`` is its path relative to the input folder."""

    source: Path
    rel: Path
    output: Path

    @property
    def is_mel(self) -> bool:
        """Whether the file holds a log-mel tensor rather than audio."""
        return self.source.suffix.lower() in MEL_SUFFIXES


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


def check_dirs(input_dir: Path, output_dir: Path) -> None:
    """``ValueError`` unless ``input_dir`` is a folder and ``output_dir`` another one."""
    if not input_dir.is_dir():
        raise ValueError(f"--input-dir {input_dir} is not a directory")
    if output_dir.resolve() == input_dir.resolve():
        raise ValueError("--output-dir must differ from --input-dir")


def find_inputs(input_dir: Path, output_dir: Path, recursive: bool) -> list[Path]:
    """Sorted audio and ``.pt`` files (not hidden, not inside ``output_dir``) of the input folder."""
    candidates = input_dir.rglob("*") if recursive else input_dir.iterdir()
    out_root = output_dir.resolve()
    found = []
    for path in candidates:
        rel = path.relative_to(input_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in AUDIO_SUFFIXES | MEL_SUFFIXES:
            continue
        if path.resolve().is_relative_to(out_root):
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(input_dir).as_posix())


def plan_jobs(input_dir: Path, output_dir: Path, options: VocodeOptions, summary: Summary) -> list[Job]:
    """Jobs still to do: existing outputs are skipped (unless overwrite), name clashes fail."""
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    for source in find_inputs(input_dir, output_dir, options.recursive):
        rel = source.relative_to(input_dir)
        job = Job(source, rel, output_dir / rel.with_suffix(".wav"))
        if job.output in claimed:
            summary.fail(job, f"its output name {job.output.name} is already taken by {claimed[job.output]}")
            continue
        claimed[job.output] = rel
        if job.output.exists() and not options.overwrite:
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
        options: VocodeOptions,
        summary: Summary,
        codec: EncodecTokenizer | None = None,
    ) -> None:
        self.model = model
        self.config = model.config
        self.options = options
        self.device = torch.device(options.device)
        self.summary = summary
        cfg = self.config
        self.tokens = isinstance(model, TokenAudioGenerator)
        self.cond_fn: nn.Module | None = None  # audio (B, T) -> condition; None: token model, no codec
        if codec is not None or not self.tokens:
            bandwidth = 6.0 if options.bandwidth is None else options.bandwidth
            self.cond_fn = audio_front_end(model, codec, bandwidth).to(self.device)
        self.min_frames = cfg.min_mel_frames
        self.min_samples = max(cfg.mel_n_fft // 2 + 1, (self.min_frames - 1) * cfg.mel_hop_length)
        self.converted: set[str] = set()

    def load(self, job: Job) -> Item:
        """Read and validate one input; ``ValueError`` with the reason if it is unusable."""
        if job.is_mel:
            return Item(job, self.load_mel(job.source))
        if self.cond_fn is None:
            raise ValueError("audio input to a token model needs --codec (EnCodec hub name or folder)")
        data, sr = read_audio(job.source)
        mono, note = to_model_rate(data, sr, self.config.sampling_rate)
        if note and note not in self.converted:
            self.converted.add(note)
            logger.info("input audio %s", note)
        if mono.shape[0] < self.min_samples:
            raise ValueError(
                f"audio too short: {mono.shape[0]} samples at {self.config.sampling_rate} Hz "
                f"(at least {self.min_samples} needed)"
            )
        return Item(job, mono)

    def load_mel(self, path: Path) -> Tensor:
        """A ``.pt`` tensor or ``.npy`` array log-mel (or codes) file -> (M, F), validated by the model."""
        try:
            if path.suffix.lower() == ".npy":
                obj = torch.from_numpy(np.load(path, allow_pickle=False))
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load / np.load raise many types for foreign or corrupt files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot load mel file: {first_line}") from exc
        if self.tokens:
            mel = self.model.check_cond(obj, self.options.bandwidth)
        else:
            mel = self.model.check_cond(obj)
        if mel.shape[0] != 1:
            raise ValueError(f"holds a batch of {mel.shape[0]} mels, expected one")
        return mel[0]

    def start_noise(self, items: list[Item], n_samples: int) -> Tensor:
        """Scaled start noise (B, n_samples), each row drawn from its file's own seed."""
        rows = []
        for item in items:
            gen = torch.Generator(device=self.device).manual_seed(file_seed(self.options.seed, item.job.rel))
            rows.append(torch.randn(n_samples, generator=gen, device=self.device))
        return torch.stack(rows) * self.config.init_noise_scale

    def mel_of(self, item: Item) -> Tensor:
        """Condition (1, C, F) of one item on the device (its log-mel, or codes)."""
        data = item.data.to(self.device)
        return data.unsqueeze(0) if item.job.is_mel else self.cond_fn(data.unsqueeze(0))

    def vocode_single(self, item: Item) -> Tensor:
        """One utterance, no lengths -> (T,): the audio input's length, or frames * mel_hop from a mel."""
        mel = self.mel_of(item)
        noise = self.start_noise([item], mel.shape[-1] * self.config.mel_hop_length)
        n, chunk = self.options.n_timesteps, self.options.chunk_size
        if chunk > 0:
            out = self.model.infer_chunked(mel, chunk, n, clamp_pred=True, noise=noise)
        else:
            out = self.model.infer(mel, n_timesteps=n, clamp_pred=True, noise=noise)
        return out[0] if item.job.is_mel else out[0, : item.data.shape[-1]]

    def vocode_batch(self, items: list[Item]) -> list[Tensor]:
        """Padded batch with true lengths -> one waveform per item, cut to its length."""
        if items[0].job.is_mel:
            fill = 0.0 if self.tokens else math.log(LOG_CLAMP)
            mel, frames = pad_batch([item.data for item in items], fill)
            lengths = [f * self.config.mel_hop_length for f in frames]
            mel = mel.to(self.device)
        else:
            audio, lengths = pad_batch([item.data for item in items])
            mel = self.cond_fn(audio.to(self.device))
        audio_lens = torch.tensor(lengths, device=self.device)
        noise = self.start_noise(items, max(lengths))
        out = self.model.infer(mel, audio_lens, self.options.n_timesteps, clamp_pred=True, noise=noise)
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
            batched = self.options.batch_size > 1
            outs = self.vocode_batch(items) if batched else [self.vocode_single(items[0])]
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


def vocode_dir(
    model: MelAudioGenerator,
    input_dir: str | Path,
    output_dir: str | Path,
    options: VocodeOptions | None = None,
    progress: bool = True,
    codec: EncodecTokenizer | None = None,
) -> Summary:
    """Vocode every audio / log-mel (or code) file of ``input_dir`` into ``output_dir``; returns the counts.

    ``model`` should be in eval mode on ``options.device``; ``codec`` turns audio into codes for a
    token model. Raises ``ValueError`` for bad folders (:func:`check_dirs`) or a codec that does not
    fit the model; bad inputs do not raise, they are listed in ``Summary.failed``.
    """
    options = options or VocodeOptions()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_dirs(input_dir, output_dir)
    summary = Summary()
    vocoder = DirVocoder(model, options, summary, codec)
    jobs = plan_jobs(input_dir, output_dir, options, summary)
    bar = tqdm(total=len(jobs), unit="file", disable=not progress)
    with logging_redirect_tqdm(), torch.inference_mode(), bar:
        for batch in make_batches(jobs, options.batch_size):
            vocoder.process(batch)
            bar.update(len(batch))
    return summary


# --- manifest-driven vocoding (the reference ``infer`` tool) ----------------------------------------


def read_manifest_sources(path: str | Path) -> list[str]:
    """Audio file paths of a lhotse ``RecordingSet`` manifest (JSONL, optionally gzipped), in order.

    Read without lhotse. ``ValueError`` naming the file when it is missing, unreadable, not JSON lines,
    lists no recordings or has a recording whose audio is not a single file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    sources = []
    try:
        with opener(path, "rt") as lines:
            for line in lines:
                if not line.strip():
                    continue
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("sources"), list):
                    raise ValueError(f"{path} is not a RecordingSet manifest (a line without 'sources')")
                files = [s["source"] for s in rec["sources"] if s.get("type") == "file"]
                if len(files) != 1:
                    raise ValueError(f"{path}: recording {rec.get('id')} is not a single audio file")
                sources.append(files[0])
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError) as exc:
        raise ValueError(f"cannot read manifest {path}: {exc}") from exc
    if not sources:
        raise ValueError(f"manifest {path} lists no recordings")
    return sources


class ManifestAudio(Dataset):
    """Whole files at the model rate, mono: item -> (audio (T,), silent, source); unreadable -> empty."""

    def __init__(self, sources: list[str], sampling_rate: int) -> None:
        self.sources = sources
        self.sampling_rate = sampling_rate

    def __len__(self) -> int:
        """Number of files."""
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[Tensor, bool, str]:
        """Load one file; a bad file gives an empty item (it is logged and skipped)."""
        source = self.sources[index]
        try:
            data, sr = read_audio(source)
        except ValueError as exc:
            logger.warning("skipping: %s", exc)
            return torch.zeros(0), True, source
        silent = float(np.sqrt(np.mean(np.square(data, dtype=np.float64)))) < SILENCE_RMS
        return to_model_rate(data, sr, self.sampling_rate)[0], silent, source


def collate_whole_files(items: list[tuple[Tensor, bool, str]]) -> tuple[Tensor, Tensor, list[str]]:
    """Zero-padded batch of the non-silent, non-empty items (the first non-empty one if all are silent)."""
    valid = [item for item in items if item[0].numel() > 0]
    kept = [item for item in valid if not item[1]] or valid[:1]
    if not kept:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), []
    audio, lengths = pad_batch([item[0] for item in kept])
    return audio, torch.tensor(lengths), [item[2] for item in kept]


def manifest_output_path(output_dir: Path, source: str, root: str | None) -> Path:
    """``output_dir / <source relative to root>``; without a root, a relative source path as it is and
    an absolute one by its file name (absolute paths are not mirrored under ``output_dir``)."""
    path = Path(source)
    rel = path.relative_to(root) if root else (Path(path.name) if path.is_absolute() else path)
    return output_dir / rel.with_suffix(".wav")


def vocode_manifest(
    model: MelAudioGenerator,
    cond_fn: nn.Module,
    sources: Sequence[str],
    output_dir: Path,
    root_path: str | None = None,
    n_timesteps: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int | None = None,
    device: str | torch.device = "cpu",
) -> int:
    """Vocode every recording of a manifest in un-shuffled padded batches; returns the files written.

    ``sources`` are the manifest's audio files in order (:func:`read_manifest_sources`). ``cond_fn``
    maps padded audio (B, T) to the model's condition (its log-mel, or codes); outputs are cut to each
    input's length. Silent files (RMS < 0.005) are skipped, as in the reference.
    """
    device = torch.device(device)
    sr = model.config.sampling_rate
    dataset = ManifestAudio(list(sources), sr)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_whole_files
    )
    generator = torch.Generator(device).manual_seed(seed) if seed is not None else None
    written = 0
    with torch.inference_mode():
        for audio, lens, names in tqdm(loader, desc="batches", unit="batch"):
            if audio.shape[0] == 0:
                continue
            audio, lens = audio.to(device), lens.to(device)
            wav = model.infer(
                cond_fn(audio), audio_lens=lens, n_timesteps=n_timesteps, clamp_pred=True, generator=generator
            )
            for row, (name, length) in enumerate(zip(names, lens.tolist(), strict=True)):
                save_audio(manifest_output_path(output_dir, name, root_path), wav[row, :length], sr)
                written += 1
    return written


def nothing_to_vocode(input_dir: Path, recursive: bool) -> str:
    """Why a folder gave nothing to vocode: the supported suffixes and what it holds instead."""
    supported = " ".join(sorted(AUDIO_SUFFIXES | MEL_SUFFIXES))
    candidates = input_dir.rglob("*") if recursive else input_dir.iterdir()
    files = [
        p
        for p in candidates
        if p.is_file() and not any(x.startswith(".") for x in p.relative_to(input_dir).parts)
    ]
    others = sorted({p.suffix.lower() or "(no suffix)" for p in files})
    found = f"it holds {len(files)} other file(s): {' '.join(others)}" if files else "it is empty"
    hint = "" if recursive else "; sub-folders are read with --recursive"
    return f"nothing to vocode in {input_dir}: no {supported} file, {found}{hint}"
