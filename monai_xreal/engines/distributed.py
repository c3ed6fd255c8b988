# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What each process attaches in data-parallel training: state-changing handlers everywhere, the rest on rank 0."""

from __future__ import annotations

from collections.abc import Sequence

import torch.distributed as dist
from ignite.handlers import EMAHandler
from monai.handlers import CheckpointLoader, LrScheduleHandler

__all__ = ["handlers_for_rank"]

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
