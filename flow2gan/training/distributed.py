"""Process-group setup for DDP (``--world-size N`` via mp.spawn, or torchrun), and small collectives."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank, the world size, and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, which logs, averages and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one member is running."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set RANK/WORLD_SIZE for this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(requested: str | None, local_rank: int) -> torch.device:
    """``requested`` if given, else ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
        return device
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def setup(rank: int, world_size: int, master_port: int, requested_device: str | None) -> DistContext:
    """Initialise the process group when world_size > 1 (NCCL on GPU, gloo on CPU).

    Spawned processes also get the ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables torchrun sets, which
    lhotse's Shar reader (and dataloader workers) use to split shards.
    """
    if world_size > 1:
        for name, value in (("RANK", rank), ("WORLD_SIZE", world_size), ("LOCAL_RANK", rank)):
            os.environ.setdefault(name, str(value))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = pick_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ.setdefault("MASTER_PORT", str(master_port))
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, device)


def cleanup(ctx: DistContext) -> None:
    """Final barrier and process-group teardown."""
    if ctx.distributed and dist.is_initialized():
        barrier(ctx)
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op without DDP)."""
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks (identity without DDP)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_object(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's ``obj``, in rank order (``[obj]`` without DDP)."""
    if not ctx.distributed:
        return [obj]
    gathered: list[object] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it), for a local process group."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(worker: Callable[..., None], world_size: int, *args: object) -> None:
    """Run ``worker(rank, world_size, *args)``: under torchrun, in-process, or spawned N times."""
    if launched_by_torchrun():
        worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), *args)
    elif world_size > 1:
        mp.spawn(worker, args=(world_size, *args), nprocs=world_size, join=True)
    else:
        worker(0, 1, *args)
