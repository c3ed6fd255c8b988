# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The EMA of a network trained with gradient accumulation: updated once per optimiser step, not once per batch."""

from __future__ import annotations

from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

__all__ = ["AccumulatedEMAHandler", "optimizer_stepped"]


def optimizer_stepped(engine: Engine, accumulation_steps: int) -> bool:
    """Whether MONAI's ``SupervisedTrainer`` with ``accumulation_steps`` stepped the optimiser in the iteration that
    just completed: every ``accumulation_steps``-th batch of an epoch, and the epoch's last batch (its flush)."""
    if accumulation_steps <= 1:
        return True
    epoch_length = engine.state.epoch_length
    if epoch_length is None:
        return engine.state.iteration % accumulation_steps == 0
    local = (engine.state.iteration - 1) % epoch_length + 1  # 1-based within the epoch
    return local % accumulation_steps == 0 or local == epoch_length


class AccumulatedEMAHandler(EMAHandler):
    """ignite's ``EMAHandler``, updated on the iterations where the trainer steps its optimiser.

    With ``accumulation_steps`` batches per optimiser step, the plain handler would average the weights after every
    batch, i.e. ``accumulation_steps`` times per step (and ``momentum`` would mean a horizon in batches, not in
    steps). Here ``momentum`` keeps its meaning: the EMA moves once per optimiser step, as without accumulation.

    Args:
        model: the trained network.
        momentum: EMA momentum per optimiser step.
        accumulation_steps: the trainer's ``accumulation_steps``.
        kwargs: the rest of ``EMAHandler``'s arguments (``warmup_iters`` then counts optimiser steps too).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, *, accumulation_steps: int = 1, **kwargs) -> None:
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be a positive integer, got {accumulation_steps!r}")
        super().__init__(model, momentum=momentum, **kwargs)
        self.accumulation_steps = accumulation_steps

    def attach(self, engine: Engine, name: str = "ema_momentum", warn_if_exists: bool = True, event=None) -> None:
        """Attach on ``ITERATION_COMPLETED`` filtered to the optimiser's steps (or on ``event`` when given)."""
        if event is None:
            steps = self.accumulation_steps
            event = Events.ITERATION_COMPLETED(event_filter=lambda e, _: optimizer_stepped(e, steps))
        super().attach(engine, name=name, warn_if_exists=warn_if_exists, event=event)
