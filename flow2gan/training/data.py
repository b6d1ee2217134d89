"""Training/validation/test data pipeline over lhotse RecordingSet manifests (SPEC §5.4)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Literal, NamedTuple

import numpy as np
import torch
from lhotse import Recording, RecordingSet
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from flow2gan.audio import peak_normalize, resample

logger = logging.getLogger(__name__)

Mode = Literal["train", "valid", "test"]
Batch = tuple[Tensor, Tensor, list[str]]

MIN_DURATION = 0.1
VALID_GAIN_DB = -3.0
TRAIN_GAIN_RANGE_DB = (-6.0, -1.0)


class AudioItem(NamedTuple):
    """One dataset item: mono float32 audio (T,) at the model rate, silence/bad flag, source name."""

    audio: Tensor
    silent: bool
    name: str


def load_recordings(path: str, min_duration: float | None = MIN_DURATION) -> RecordingSet:
    """Eagerly load a RecordingSet manifest, dropping recordings ≤ ``min_duration`` s (None: keep all)."""
    recordings = RecordingSet.from_file(path).to_eager()
    if min_duration is None:
        return recordings
    kept = [rec for rec in recordings if rec.duration > min_duration]
    dropped = len(recordings) - len(kept)
    if dropped:
        logger.info("%s: dropped %d recordings of duration <= %.3f s", path, dropped, min_duration)
    return RecordingSet.from_recordings(kept)


def recording_name(rec: Recording) -> str:
    """Item name: the source path of a single-file recording, else the recording id."""
    if len(rec.sources) == 1 and rec.sources[0].type == "file":
        return str(rec.sources[0].source)
    return rec.id


def rms(audio: np.ndarray) -> float:
    """Root mean square over every sample of an array of any shape (0 for an empty array)."""
    if audio.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


class AudioDataset(Dataset):
    """Map-style dataset of ``AudioItem`` over recordings: random/first crops with gain, or whole files.

    ``train``: ``d = min(duration, rec.duration)``, up to ``max_load_times`` random offsets (numpy global
    RNG) until the raw RMS ≥ ``silence_rms``, gain ``U(-6, -1)`` dB (0.01 dB steps). ``valid``: first ``d``
    seconds, gain −3 dB. ``test``: whole file, no gain. Audio is mixed to mono by channel mean,
    peak-normalised at the file's rate, then resampled to ``sampling_rate``. Unreadable files give an empty
    item flagged silent.
    """

    def __init__(
        self,
        recordings: Iterable[Recording],
        sampling_rate: int,
        mode: Mode,
        duration: float = 1.5,
        max_load_times: int = 3,
        silence_rms: float = 0.005,
    ) -> None:
        if mode not in ("train", "valid", "test"):
            raise ValueError(f"mode must be 'train', 'valid' or 'test', got {mode!r}")
        if duration <= 0:
            raise ValueError(f"duration must be positive, got {duration}")
        if max_load_times < 1:
            raise ValueError(f"max_load_times must be >= 1, got {max_load_times}")
        self.recordings = list(recordings)
        self.sampling_rate = sampling_rate
        self.mode = mode
        self.duration = duration
        self.max_load_times = max_load_times
        self.silence_rms = silence_rms

    def __len__(self) -> int:
        """Number of recordings."""
        return len(self.recordings)

    def __getitem__(self, index: int) -> AudioItem:
        """Load, crop, gain and resample recording ``index``; never raises for a bad audio file."""
        rec = self.recordings[index]
        name = recording_name(rec)
        try:
            raw, silent = self._load_raw(rec)
        except Exception as exc:  # lhotse/soundfile raise many types; a bad file must not stop training
            logger.warning("skipping unreadable audio %s (recording %s): %s", name, rec.id, exc)
            return AudioItem(torch.zeros(0), True, name)
        mono = torch.from_numpy(np.ascontiguousarray(raw.mean(axis=0, dtype=np.float32)))
        gain_db = self._gain_db()
        if gain_db is not None:
            mono = peak_normalize(mono, gain_db)
        audio = resample(mono.numpy(), rec.sampling_rate, self.sampling_rate)
        return AudioItem(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), silent, name)

    def _load_raw(self, rec: Recording) -> tuple[np.ndarray, bool]:
        """Raw (C, T) float32 segment at the file's rate and its silence flag; raises on a bad file."""
        if self.mode == "test":
            raw = self._checked(rec, rec.load_audio())
            return raw, rms(raw) < self.silence_rms
        seg = min(self.duration, rec.duration)
        tries = self.max_load_times if self.mode == "train" else 1
        for _ in range(tries):
            offset = float(np.random.uniform(0.0, rec.duration - seg)) if self.mode == "train" else 0.0
            raw = self._checked(rec, rec.load_audio(offset=offset, duration=seg))
            if rms(raw) >= self.silence_rms:
                return raw, False
        return raw, True

    @staticmethod
    def _checked(rec: Recording, raw: np.ndarray) -> np.ndarray:
        """Validate a loaded (C, T) array: non-empty and finite; returns it as float32."""
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim == 1:
            raw = raw[None]
        if raw.shape[-1] == 0:
            raise ValueError(f"recording {rec.id} loaded as empty audio")
        if not np.isfinite(raw).all():
            raise ValueError(f"recording {rec.id} contains NaN or inf samples")
        return raw

    def _gain_db(self) -> float | None:
        """Peak level for this item in dBFS (train: random, valid: −3), None for no gain (test)."""
        if self.mode == "train":
            return round(float(np.random.uniform(*TRAIN_GAIN_RANGE_DB)), 2)
        if self.mode == "valid":
            return VALID_GAIN_DB
        return None


def collate_audio(items: Sequence[AudioItem], drop_silent: bool = True) -> Batch:
    """Collate items to ``(audio (B, Tmax) float32 zero-padded, lens int32 (B,), names)``.

    Empty (unreadable) items are always dropped. With ``drop_silent`` the silent-flagged items are dropped
    too, except that the first non-empty item is kept when all are silent. If every item is empty the
    result has B = 0 (audio of shape (0, 0)); callers must skip such a batch.
    """
    valid = [item for item in items if item.audio.numel() > 0]
    kept = [item for item in valid if not item.silent] if drop_silent else valid
    if not kept and valid:
        kept = valid[:1]
    lens = torch.tensor([item.audio.numel() for item in kept], dtype=torch.int32)
    t_max = int(lens.max()) if kept else 0
    audio = torch.zeros(len(kept), t_max, dtype=torch.float32)
    for row, item in enumerate(kept):
        audio[row, : item.audio.numel()] = item.audio
    return audio, lens, [item.name for item in kept]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from torch's per-worker (per-epoch) seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _make_loader(
    dataset: AudioDataset,
    sampler: Sampler,
    batch_size: int,
    num_workers: int,
    drop_silent: bool = True,
) -> DataLoader:
    """A DataLoader with the project's collate, worker seeding and pin_memory on CUDA.

    Workers are not persistent: they restart every epoch and are seeded from the global torch RNG, which
    the training loop re-seeds per epoch, so a resumed run draws the same crops as an uninterrupted one.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=partial(collate_audio, drop_silent=drop_silent),
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker if num_workers > 0 else None,
        drop_last=False,
    )


def _nonempty(recordings: RecordingSet, path: str) -> RecordingSet:
    """Raise a clear error when a manifest has no usable recordings."""
    if len(recordings) == 0:
        raise ValueError(f"manifest {path} has no recordings (after the duration filter)")
    return recordings


def check_loader_weights(weights: Sequence[float] | None, num_loaders: int) -> list[float]:
    """Validated per-loader draw weights (default equal); their count must equal the number of manifests."""
    if weights is None:
        return [1.0] * num_loaders
    if len(weights) != num_loaders:
        raise ValueError(
            f"got {len(weights)} loader weights for {num_loaders} train manifests; lengths must match"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"loader weights must be non-negative with a positive sum, got {list(weights)}")
    return [float(w) for w in weights]


class WeightedLoaderMixer:
    """Multi-manifest epoch: before every batch draw a loader with ``random.choices``; yields (index, batch).

    The epoch ends the first time the drawn loader is exhausted; each ``iter()`` starts fresh iterators.
    """

    def __init__(self, loaders: Sequence[DataLoader], weights: Sequence[float] | None = None) -> None:
        if not loaders:
            raise ValueError("WeightedLoaderMixer needs at least one loader")
        self.loaders = list(loaders)
        self.weights = check_loader_weights(weights, len(loaders))

    def __iter__(self) -> Iterator[tuple[int, Batch]]:
        """Yield ``(loader_index, batch)`` until the drawn loader runs out."""
        iterators: list[Iterator[Batch] | None] = [None] * len(self.loaders)
        indices = range(len(self.loaders))
        while True:
            index = random.choices(indices, weights=self.weights)[0]
            if iterators[index] is None:
                iterators[index] = iter(self.loaders[index])
            try:
                batch = next(iterators[index])
            except StopIteration:
                return
            yield index, batch


def set_loader_epoch(loaders: Iterable[DataLoader], epoch: int) -> None:
    """Call ``set_epoch(epoch − 1)`` on every DistributedSampler among the loaders (1-based ``epoch``)."""
    for loader in loaders:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch - 1)


def make_train_loaders(
    manifest_paths: Sequence[str],
    weights: Sequence[float] | None,
    sampling_rate: int,
    batch_size: int,
    num_workers: int,
    duration: float = 1.5,
    max_load_times: int = 3,
    world_size: int = 1,
    rank: int = 0,
    sampler_seed: int = 0,
) -> WeightedLoaderMixer:
    """One shuffled training loader per manifest (RandomSampler, or DistributedSampler under DDP), mixed."""
    weights = check_loader_weights(weights, len(manifest_paths))
    loaders = []
    for path in manifest_paths:
        dataset = AudioDataset(
            _nonempty(load_recordings(path, MIN_DURATION), path),
            sampling_rate,
            "train",
            duration=duration,
            max_load_times=max_load_times,
        )
        if world_size > 1:
            sampler: Sampler = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=sampler_seed
            )
        else:
            sampler = RandomSampler(dataset)
        loaders.append(_make_loader(dataset, sampler, batch_size, num_workers))
        logger.info("train manifest %s: %d recordings", path, len(dataset))
    return WeightedLoaderMixer(loaders, weights)


def make_valid_loaders(
    manifest_paths: Sequence[str],
    sampling_rate: int,
    batch_size: int,
    num_workers: int,
    duration: float = 1.5,
    world_size: int = 1,
    rank: int = 0,
) -> list[DataLoader]:
    """One un-shuffled validation loader per manifest (first ``duration`` s, −3 dB; DDP: split by rank)."""
    loaders = []
    for path in manifest_paths:
        dataset = AudioDataset(
            _nonempty(load_recordings(path, MIN_DURATION), path), sampling_rate, "valid", duration
        )
        if world_size > 1:
            sampler: Sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        else:
            sampler = SequentialSampler(dataset)
        loaders.append(_make_loader(dataset, sampler, batch_size, num_workers))
        logger.info("valid manifest %s: %d recordings", path, len(dataset))
    return loaders


def make_test_loader(manifest_path: str, sampling_rate: int, batch_size: int, num_workers: int) -> DataLoader:
    """Un-shuffled whole-file loader (no gain, no duration filter) dropping silent files, for inference."""
    dataset = AudioDataset(load_recordings(manifest_path, None), sampling_rate, "test")
    return _make_loader(dataset, SequentialSampler(dataset), batch_size, num_workers)


def make_test_batch(manifest_path: str, sampling_rate: int, drop_silent: bool) -> Batch:
    """The whole (small) TensorBoard test manifest as one padded batch ``(audio (B,T), lens (B,), names)``."""
    dataset = AudioDataset(load_recordings(manifest_path, None), sampling_rate, "test")
    return collate_audio([dataset[i] for i in range(len(dataset))], drop_silent=drop_silent)
