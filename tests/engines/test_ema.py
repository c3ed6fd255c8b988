# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The EMA under gradient accumulation moves exactly when MONAI's trainer steps the optimiser."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from ignite.handlers import EMAHandler
from monai.engines import SupervisedTrainer

from monai_xreal.engines import AccumulatedEMAHandler


def _changes(ema_handler_class, steps: int, batches: int = 7, epochs: int = 2, **kwargs):
    """Per iteration: whether the network's weights moved and whether the EMA's did."""
    torch.manual_seed(0)
    network = torch.nn.Linear(3, 1)
    data = [{"image": torch.randn(2, 3), "label": torch.randn(2, 1)} for _ in range(batches)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=data, network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1), loss_function=torch.nn.MSELoss(),
        accumulation_steps=steps,
    )  # fmt: skip
    ema = ema_handler_class(network, momentum=0.5, **kwargs)
    ema.attach(trainer)
    moved = []
    before = {}

    @trainer.on(Events.ITERATION_STARTED)
    def remember(engine):
        before["net"] = network.weight.detach().clone()
        before["ema"] = ema.ema_model.weight.detach().clone()

    @trainer.on(Events.ITERATION_COMPLETED)  # registered after the EMA's handler: runs after it
    def compare(engine):
        moved.append(
            (not torch.equal(before["net"], network.weight), not torch.equal(before["ema"], ema.ema_model.weight))
        )

    trainer.run()
    return moved


def test_ema_moves_once_per_optimiser_step_including_the_epoch_flush():
    moved = _changes(AccumulatedEMAHandler, 3, accumulation_steps=3)
    stepped = [i + 1 for i, (net, _) in enumerate(moved) if net]
    assert stepped == [3, 6, 7, 10, 13, 14]  # every third batch and each epoch's last (MONAI's flush)
    assert [i + 1 for i, (_, ema) in enumerate(moved) if ema] == stepped


def test_plain_ema_would_move_on_every_batch():
    moved = _changes(EMAHandler, 3)
    # equal to the network until its first step (iteration 3), then averaged again after every batch
    assert [ema for _, ema in moved] == [False, False] + [True] * 12 and sum(net for net, _ in moved) == 6


def test_without_accumulation_it_is_ignites_handler():
    assert _changes(AccumulatedEMAHandler, 1, accumulation_steps=1) == _changes(EMAHandler, 1)


@pytest.mark.parametrize("steps", [0, 2.5, True])
def test_bad_accumulation_is_refused(steps):
    with pytest.raises(ValueError, match="accumulation_steps"):
        AccumulatedEMAHandler(torch.nn.Linear(1, 1), accumulation_steps=steps)


def test_without_an_epoch_length_every_nth_iteration_steps():
    from ignite.engine import Engine

    from monai_xreal.engines import optimizer_stepped

    engine = Engine(lambda engine, batch: None)
    engine.state.epoch_length = None
    stepped = []
    for iteration in range(1, 10):
        engine.state.iteration = iteration
        stepped.append(optimizer_stepped(engine, 4))
    assert [i + 1 for i, s in enumerate(stepped) if s] == [4, 8]  # MONAI's rule with no epoch to flush
