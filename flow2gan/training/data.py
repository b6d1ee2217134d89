"""Training/validation/test data pipeline over lhotse RecordingSet manifests (SPEC §5.4) and Shar shards."""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Literal, NamedTuple

import numpy as np
import torch
from lhotse import CutSet, Recording, RecordingSet
from lhotse.cut import Cut
from lhotse.shar.readers.utils import pytorch_worker_info
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from flow2gan.audio import pad_batch, peak_normalize, resample
from flow2gan.training.manifests import MIN_DURATION, load_recordings

logger = logging.getLogger(__name__)

Mode = Literal["train", "valid", "test"]
RandomSource = np.random.Generator | ModuleType  # a seeded Generator, or the ``numpy.random`` module
Batch = tuple[Tensor, Tensor, list[str]]

VALID_GAIN_DB = -3.0
TRAIN_GAIN_RANGE_DB = (-6.0, -1.0)
SHAR_SHUFFLE_BUFFER = 500  # Shar cuts (with their encoded audio) held per worker for the cut-order shuffle


class AudioItem(NamedTuple):
    """One dataset item: mono float32 audio (T,) at the model rate, silence/bad flag, source name."""

    audio: Tensor
    silent: bool
    name: str


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

    def __getitem__(self, key: int | tuple[int, int]) -> AudioItem:
        """Load, crop, gain and resample item ``key`` (index or (index, seed)); never raises for bad audio.

        With a seed (see :class:`SeededSampler`) the crop offsets and gain come from
        ``numpy.random.default_rng(seed)``: they depend only on the key, not on which worker loads it.
        """
        index, seed = key if isinstance(key, tuple) else (key, None)
        return self.load_item(self.recordings[index], None if seed is None else np.random.default_rng(seed))

    def load_item(self, rec: Recording, rng: np.random.Generator | None = None) -> AudioItem:
        """Load, crop, gain and resample one recording in this dataset's mode; never raises for bad audio.

        Random crops and gains are drawn from ``rng``, or from numpy's global RNG when it is None.
        """
        rng = np.random if rng is None else rng
        name = recording_name(rec)
        try:
            raw, silent = self._load_raw(rec, rng)
        except Exception as exc:  # lhotse/soundfile raise many types; a bad file must not stop training
            logger.warning("skipping unreadable audio %s (recording %s): %s", name, rec.id, exc)
            return AudioItem(torch.zeros(0), True, name)
        mono = torch.from_numpy(np.ascontiguousarray(raw.mean(axis=0, dtype=np.float32)))
        gain_db = self._gain_db(rng)
        if gain_db is not None:
            mono = peak_normalize(mono, gain_db)
        audio = resample(mono.numpy(), rec.sampling_rate, self.sampling_rate)
        return AudioItem(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), silent, name)

    def _load_raw(self, rec: Recording, rng: RandomSource) -> tuple[np.ndarray, bool]:
        """Raw (C, T) float32 segment at the file's rate and its silence flag; raises on a bad file."""
        if self.mode == "test":
            raw = self._checked(rec, rec.load_audio())
            return raw, rms(raw) < self.silence_rms
        seg = min(self.duration, rec.duration)
        tries = self.max_load_times if self.mode == "train" else 1
        for _ in range(tries):
            offset = float(rng.uniform(0.0, rec.duration - seg)) if self.mode == "train" else 0.0
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

    def _gain_db(self, rng: RandomSource) -> float | None:
        """Peak level for this item in dBFS (train: random, valid: −3), None for no gain (test)."""
        if self.mode == "train":
            return round(float(rng.uniform(*TRAIN_GAIN_RANGE_DB)), 2)
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
    if not kept:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int32), []
    audio, lengths = pad_batch([item.audio for item in kept])
    return audio, torch.tensor(lengths, dtype=torch.int32), [item.name for item in kept]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from torch's per-worker seed; 1 torch thread.

    Workers only read, crop and resample audio; one intra-op thread each keeps them from competing with
    the training process for cores.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


class SeededSampler(Sampler):
    """Wraps an index sampler to yield ``(index, seed)``: one seed per item, drawn in the main process.

    The seeds come from torch's global RNG when iteration starts (the training loop re-seeds it every
    epoch), so the crops of an epoch depend only on the run's seed and epoch, not on the data-loader
    workers: workers can stay alive across epochs and a resumed run still draws the same crops as an
    uninterrupted one.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        """Items per epoch (the wrapped sampler's)."""
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """``(index, seed)`` pairs in the wrapped sampler's order."""
        indices = list(self.sampler)
        seeds = torch.randint(0, 2**62, (len(indices),), dtype=torch.int64).tolist()
        return iter(zip(indices, seeds, strict=True))


def _make_loader(
    dataset: Dataset,
    sampler: Sampler | None,
    batch_size: int,
    num_workers: int,
    drop_silent: bool = True,
    persistent: bool = False,
) -> DataLoader:
    """A DataLoader with the project's collate, worker seeding and pin_memory on CUDA.

    ``sampler`` is None for an ``IterableDataset``. ``persistent`` keeps the workers alive across epochs
    (map-style training loaders, whose items are seeded by a :class:`SeededSampler`); their base seed then
    comes from a private generator, so the global torch RNG is consumed only by the sampler, the same with
    or without (persistent) workers. Otherwise workers restart every epoch and are seeded from the global
    torch RNG, which the training loop re-seeds per epoch, so a resumed run draws the same data.
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
        persistent_workers=persistent and num_workers > 0,
        generator=torch.Generator().manual_seed(0) if persistent else None,
    )


def _nonempty(recordings: RecordingSet, path: str) -> RecordingSet:
    """Raise a clear error when a manifest has no usable recordings."""
    if len(recordings) == 0:
        raise ValueError(f"manifest {path} has no recordings longer than {MIN_DURATION} s")
    return recordings


def check_loader_weights(weights: Sequence[float] | None, num_loaders: int) -> list[float]:
    """Validated per-loader draw weights (default equal); their count must equal the number of loaders."""
    if weights is None:
        return [1.0] * num_loaders
    if len(weights) != num_loaders:
        raise ValueError(
            f"{len(weights)} weights for {num_loaders} training loaders (train manifests, then Shar dirs); "
            "lengths must match"
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"loader weights must be non-negative with a positive sum, got {list(weights)}")
    return [float(w) for w in weights]


class WeightedLoaderMixer:
    """Multi-manifest epoch: before every batch draw a loader with ``random.choices``; yields (index, batch).

    The epoch ends the first time the drawn loader is exhausted; each ``iter()`` starts fresh iterators.
    """

    def __init__(
        self, loaders: Sequence[DataLoader | SharLoader], weights: Sequence[float] | None = None
    ) -> None:
        if not loaders:
            raise ValueError("WeightedLoaderMixer needs at least one loader")
        self.loaders = list(loaders)
        self.weights = check_loader_weights(weights, len(loaders))

    def __iter__(self) -> Iterator[tuple[int, Batch]]:
        """Yield ``(loader_index, batch)`` until the drawn loader runs out.

        Every loader's iterator (sampler order, per-item seeds) is made up front, from the RNG state of
        the epoch's start, so that a mid-epoch resume can replay the epoch's data exactly.
        """
        iterators = [iter(loader) for loader in self.loaders]
        indices = range(len(self.loaders))
        while True:
            index = random.choices(indices, weights=self.weights)[0]
            try:
                batch = next(iterators[index])
            except StopIteration:
                return
            yield index, batch

    def expected_batches(self) -> int:
        """Batches in an epoch: exact for one loader; with several, when the first is expected to run out."""
        total = sum(self.weights)
        pairs = zip(self.loaders, self.weights, strict=True)
        return max(1, round(min(len(loader) * total / w for loader, w in pairs if w)))


def shar_cut_paths(shar_dir: Path) -> list[Path]:
    """The sorted ``cuts.*.jsonl[.gz]`` shard manifests of a Shar directory; ValueError if there are none."""
    paths = sorted(p for p in Path(shar_dir).glob("cuts.*") if ".jsonl" in p.suffixes)
    if not paths:
        raise ValueError(f"{shar_dir} is not a lhotse Shar directory (no cuts.*.jsonl.gz shards)")
    return paths


def count_training_cuts(shar_dir: Path) -> int:
    """Number of cuts longer than ``MIN_DURATION`` s, read from the cut manifests only (no audio)."""
    cuts = CutSet.from_shar(fields={"cuts": shar_cut_paths(shar_dir)})
    return sum(1 for cut in cuts if _long_enough(cut))


def _long_enough(cut: Cut) -> bool:
    """True for a cut longer than ``MIN_DURATION`` seconds (the training duration filter)."""
    return cut.duration > MIN_DURATION


def hash_seed(*parts: int) -> int:
    """A deterministic 31-bit seed from integers (the same on every platform, process and run)."""
    return random.Random("-".join(str(p) for p in parts)).getrandbits(31)


class SharTrainStream(IterableDataset):
    """Endless stream of training ``AudioItem``s from this rank's and dataloader worker's Shar shards.

    Pass ``k`` of epoch ``e`` (``set_epoch``) shuffles the shard list with seed ``(seed, e, k)``, identical
    on every rank, then lhotse gives each (rank, worker) its own slice of it (``split_for_dataloading``;
    rank and world size from ``RANK``/``WORLD_SIZE`` or the process group); cuts pass a ``shuffle_buffer``
    seeded by ``(seed, e, k, rank, worker)`` and are cropped by ``items.load_item`` (train mode). Raises
    RuntimeError when a worker gets no cut.
    """

    def __init__(
        self, shar_dir: Path, items: AudioDataset, seed: int = 0, shuffle_buffer: int = SHAR_SHUFFLE_BUFFER
    ) -> None:
        self.shar_dir = Path(shar_dir)
        self.items = items
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch`` (1-based) for the next iteration."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[AudioItem]:
        """Yield items forever, one pass over this worker's shards after another."""
        rank, _, worker, _ = pytorch_worker_info()
        for k in itertools.count():
            cuts = CutSet.from_shar(
                in_dir=self.shar_dir,
                split_for_dataloading=True,
                shuffle_shards=True,
                stateful_shuffle=False,
                seed=hash_seed(self.seed, self.epoch, k),
            )
            rng = random.Random(hash_seed(self.seed, self.epoch, k, rank, worker))
            cuts = cuts.filter(_long_enough).shuffle(rng, self.shuffle_buffer)
            empty = True
            for cut in cuts:
                empty = False
                yield self.items.load_item(cut.recording)
            if empty:
                raise RuntimeError(f"{self.shar_dir}: no cuts for rank {rank}, dataloader worker {worker}")


class SharLoader:
    """An epoch of ``num_batches`` batches from a DataLoader over a ``SharTrainStream``.

    The DataLoader's workers must not persist across epochs: ``set_epoch`` reaches them only because they
    are started (forked) afresh by every ``iter()``.
    """

    def __init__(self, loader: DataLoader, num_batches: int) -> None:
        self.loader = loader
        self.num_batches = num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the (1-based) epoch whose stream the next ``iter()`` reads."""
        self.loader.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        """The epoch's batches (fresh workers every epoch)."""
        return itertools.islice(iter(self.loader), self.num_batches)


def make_shar_train_loader(
    shar_dir: Path,
    sampling_rate: int,
    batch_size: int,
    num_workers: int,
    duration: float = 1.5,
    max_load_times: int = 3,
    world_size: int = 1,
    rank: int = 0,
    seed: int = 0,
) -> SharLoader:
    """Training loader over a Shar directory: ``ceil(cuts / (world_size · batch_size))`` batches an epoch.

    Every rank runs the same number of batches (the streams repeat), so DDP never waits on a rank whose
    shards ran out. Raises ValueError when the directory is not Shar, holds no cut longer than
    ``MIN_DURATION``, or has fewer shards than ``world_size · max(1, num_workers)`` readers; RuntimeError
    when lhotse would see another rank or world size than the one given.
    """
    lhotse_rank, lhotse_world_size, _, _ = pytorch_worker_info()
    if (lhotse_rank, lhotse_world_size) != (rank, world_size):
        raise RuntimeError(
            f"lhotse sees rank {lhotse_rank} of {lhotse_world_size}, training runs rank {rank} of "
            f"{world_size}: set RANK and WORLD_SIZE (distributed.setup does) before building the loader"
        )
    readers = world_size * max(1, num_workers)
    num_shards = len(shar_cut_paths(shar_dir))
    if num_shards < readers:
        raise ValueError(
            f"{shar_dir} has {num_shards} shards for {world_size} rank(s) x {max(1, num_workers)} "
            "dataloader worker(s); write smaller shards (--shar-shard-size) or use fewer workers"
        )
    num_cuts = count_training_cuts(shar_dir)
    if num_cuts == 0:
        raise ValueError(f"{shar_dir} has no cuts longer than {MIN_DURATION} s")
    items = AudioDataset([], sampling_rate, "train", duration=duration, max_load_times=max_load_times)
    stream = SharTrainStream(shar_dir, items, seed=seed)
    num_batches = math.ceil(num_cuts / (world_size * batch_size))
    logger.info(
        "train shar %s: %d cuts, %d shards, %d batches/epoch", shar_dir, num_cuts, num_shards, num_batches
    )
    return SharLoader(_make_loader(stream, None, batch_size, num_workers), num_batches)


def set_loader_epoch(loaders: Iterable[DataLoader | SharLoader], epoch: int) -> None:
    """Select the 1-based ``epoch`` of every Shar loader and DistributedSampler (``set_epoch(epoch − 1)``).

    A sampler wrapped in a :class:`SeededSampler` counts as the sampler it wraps.
    """
    for loader in loaders:
        if isinstance(loader, SharLoader):
            loader.set_epoch(epoch)
            continue
        sampler = loader.sampler.sampler if isinstance(loader.sampler, SeededSampler) else loader.sampler
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch - 1)


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
    shar_dirs: Sequence[str] = (),
) -> WeightedLoaderMixer:
    """One shuffled training loader per manifest (RandomSampler, or DistributedSampler under DDP), then one
    per Shar directory (``make_shar_train_loader``), mixed with ``weights`` (manifests first).

    Manifest items are keyed ``(index, seed)`` by a :class:`SeededSampler` and their workers persist.
    """
    weights = check_loader_weights(weights, len(manifest_paths) + len(shar_dirs))
    loaders: list[DataLoader | SharLoader] = []
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
        loaders.append(
            _make_loader(dataset, SeededSampler(sampler), batch_size, num_workers, persistent=True)
        )
        logger.info("train manifest %s: %d recordings", path, len(dataset))
    for shar_dir in shar_dirs:
        loaders.append(
            make_shar_train_loader(
                Path(shar_dir),
                sampling_rate,
                batch_size,
                num_workers,
                duration=duration,
                max_load_times=max_load_times,
                world_size=world_size,
                rank=rank,
                seed=sampler_seed,
            )
        )
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
