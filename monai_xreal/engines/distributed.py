# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What each process attaches in data-parallel training: state-changing handlers everywhere, the rest on rank 0."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from ignite.handlers import EMAHandler
from monai.handlers import CheckpointLoader, LrScheduleHandler

__all__ = ["handlers_for_rank", "launched_ranks"]

# handlers that change what is trained, so every process must run them to stay in step
_EVERY_RANK = (EMAHandler, LrScheduleHandler, CheckpointLoader)


def handlers_for_rank(handlers: Sequence, rank: int | None = None) -> list:
    """The handlers this process attaches: all of them on rank 0 (or without DDP), else only state-changing ones.

    Logging (``StatsHandler``, TensorBoard, progress bar), checkpoint saving and preview grids run on rank 0 only,
    as in MONAI model-zoo bundles; EMA updates, learning-rate schedules and checkpoint loading run on every rank.

    Args:
        handlers: the config's handler objects.
        rank: this process's rank; ``None`` asks ``torch.distributed`` (0 when it is not initialised).
    """
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        return list(handlers)
    return [handler for handler in handlers if isinstance(handler, _EVERY_RANK)]


@contextlib.contextmanager
def launched_ranks(device: torch.device | None = None) -> Iterator[tuple[int, int, Callable[[], None]]]:
    """This process's place among those ``torchrun`` started: ``(rank, world_size, barrier)``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is created here (NCCL on CUDA, gloo on CPU) with a
    timeout of a whole run, since ranks wait for the slowest at the end, and destroyed on leaving; a plain run is
    rank 0 of 1 with a barrier that does nothing.
    """
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world_size <= 1:
        yield 0, 1, lambda: None
        return
    created = not dist.is_initialized()
    if created:
        backend = "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(days=7))
    try:
        yield rank, world_size, dist.barrier
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
