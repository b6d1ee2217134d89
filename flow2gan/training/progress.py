"""Training progress: batches/total and ETA per epoch plus an overall line.

On a terminal these are two tqdm bars; when stderr is not a TTY (logs redirected to a file, CI) they
are plain log lines, written every tenth of an epoch or every ``log_every_s`` seconds, whichever
comes first, and at the end of every epoch.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

logger = logging.getLogger(__name__)

T = TypeVar("T")


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``12s``, or ``?`` when unknown (NaN)."""
    if seconds != seconds:
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class TrainingProgress:
    """Progress of epochs ``start_epoch..num_epochs``; ``enabled=False`` (non-zero ranks) shows nothing."""

    def __init__(
        self,
        start_epoch: int,
        num_epochs: int,
        enabled: bool = True,
        stream: IO[str] | None = None,
        log_every_s: float = 60.0,
    ) -> None:
        self.start_epoch = start_epoch
        self.num_epochs = num_epochs
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.bars = enabled and self.stream.isatty()
        self.log_every_s = log_every_s
        self.start_time = time.monotonic()
        self.epochs_done = 0
        self.overall = (
            tqdm(
                total=num_epochs - start_epoch + 1,
                desc="training",
                unit="epoch",
                file=self.stream,
                position=0,
            )
            if self.bars
            else None
        )

    def overall_eta(self, epoch_fraction: float) -> float:
        """Seconds left for the whole run, from the mean epoch time so far (incl. the current fraction)."""
        done = self.epochs_done + epoch_fraction
        if done <= 0:
            return float("nan")
        elapsed = time.monotonic() - self.start_time
        return elapsed / done * (self.num_epochs - self.start_epoch + 1 - done)

    def epoch(self, epoch: int, batches: Iterable[T], total: int, done: int = 0) -> Iterator[T]:
        """Yield from ``batches`` while reporting ``done/total`` batches and ETAs of epoch ``epoch``.

        ``done``: batches of the epoch already trained before (a mid-epoch resume).
        """
        if not self.enabled:
            yield from batches
            return
        desc = f"epoch {epoch}/{self.num_epochs}"
        if self.bars:
            bar = tqdm(
                total=total, initial=done, desc=desc, unit="batch", file=self.stream, position=1, leave=False
            )
            with bar:
                for item in batches:
                    yield item
                    bar.update(1)
            self.epochs_done += 1
            self.overall.update(1)
            return
        start = last_time = time.monotonic()
        first = last_done = done
        step = max(1, total // 10)
        for item in batches:
            yield item
            done += 1
            now = time.monotonic()
            if done - last_done >= step or now - last_time >= self.log_every_s:
                rate = (done - first) / max(now - start, 1e-9)
                logger.info(
                    "%s: %d/%d batches (%.0f%%), %.3g batch/s, epoch ETA %s; overall ETA %s",
                    desc,
                    done,
                    total,
                    100.0 * done / total,
                    rate,
                    format_duration(max(total - done, 0) / rate),
                    format_duration(self.overall_eta(min(done / total, 1.0))),
                )
                last_time, last_done = now, done
        self.epochs_done += 1
        logger.info(
            "%s done: %d batches in %s; overall %d/%d epochs, ETA %s",
            desc,
            done - first,
            format_duration(time.monotonic() - start),
            self.epochs_done,
            self.num_epochs - self.start_epoch + 1,
            format_duration(self.overall_eta(0.0)),
        )

    def close(self) -> None:
        """Close the overall bar."""
        if self.overall is not None:
            self.overall.close()
