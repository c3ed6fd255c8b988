# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Data-parallel training from the bundle configs: the process group, and which handlers each process attaches
(state-changing handlers everywhere, the rest on rank 0)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from ignite.handlers import EMAHandler
from monai.handlers import CheckpointLoader, LrScheduleHandler

__all__ = ["handlers_for_rank", "runs_on_every_rank", "init_distributed", "destroy_distributed", "launched_ranks"]

# handlers that change what is trained, so every process must run them to stay in step
_EVERY_RANK = (EMAHandler, LrScheduleHandler, CheckpointLoader)


def runs_on_every_rank(handler: Any) -> bool:
    """Whether every process must attach ``handler``: EMA, learning-rate schedules, checkpoint loading, and any
    handler whose ``every_rank`` attribute is true (one that changes the training or joins collective calls, such
    as :class:`monai_xreal.engines.LatentNoiseFilter`)."""
    return isinstance(handler, _EVERY_RANK) or bool(getattr(handler, "every_rank", False))


def handlers_for_rank(handlers: Mapping[str, Any] | Sequence[Any], rank: int | None = None) -> list:
    """The handlers this process attaches: all of them on rank 0 (or without DDP), else only state-changing ones.

    Logging (``StatsHandler``, TensorBoard, progress bar), checkpoint saving and preview grids run on rank 0 only,
    as in MONAI model-zoo bundles; what :func:`runs_on_every_rank` accepts runs on every rank. The train configs
    call this on their named handler dicts, so the same config serves one process and ``torchrun``.

    Args:
        handlers: the config's handler objects, a list or a dict by name (in order; ``None`` values left out).
        rank: this process's rank; ``None`` asks ``torch.distributed`` (0 when it is not initialised).
    """
    values = handlers.values() if isinstance(handlers, Mapping) else handlers
    present = [handler for handler in values if handler is not None]
    if rank is None:
        rank = idist.get_rank()
    if rank == 0:
        return present
    return [handler for handler in present if runs_on_every_rank(handler)]


def init_distributed(backend: str | None = None, device: torch.device | str | None = None) -> int:
    """Join the process group ``torchrun`` describes (unless already joined) and select this process's GPU; the rank.

    ``multi_gpu_train.json`` runs this as its first initialize step.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; ``None``: NCCL with CUDA, else gloo.
        device: this process's device; a CUDA device becomes the current one.
    """
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    return dist.get_rank()


def destroy_distributed() -> None:
    """Leave the process group if this process is in one (``multi_gpu_train.json``'s finalize step)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
