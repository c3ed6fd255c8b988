# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Validation image grids during training: what to draw (previews) and the handler that saves them each epoch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import list_data_collate
from torch import nn

from monai_xreal.visualize import image_grid, overlay_masks, save_rgb

__all__ = ["first_items", "AutoencoderPreview", "PipelinePreview", "ImageGridSaver"]

Rows = Sequence[torch.Tensor]  # rows of (N, 1, H, W) images in [0, 1]; one grid row each


def first_items(dataset: Sequence[dict], count: int) -> dict:
    """The first ``count`` items of a dataset collated into one batch (fixed preview samples)."""
    if len(dataset) == 0:
        raise ValueError("first_items: the dataset is empty")
    return list_data_collate([dataset[i] for i in range(min(count, len(dataset)))])


class AutoencoderPreview:
    """Rows *input, output, target* of an autoencoder on a fixed batch (reconstruction, or mask-to-image).

    Args:
        network: the ``AutoencoderKL`` being trained (put back in train mode afterwards).
        batch: a collated dict batch.
        prepare_batch: ``prepare_batch(batch, device)`` -> ``(inputs, targets)``; the preview fixes its randomness.
        device: where to run.
    """

    def __init__(self, network: nn.Module, batch: dict, prepare_batch: Callable, device=None) -> None:
        self.network, self.batch, self.prepare_batch, self.device = network, batch, prepare_batch, device

    @torch.no_grad()
    def __call__(self) -> Rows:
        was_training = self.network.training
        self.network.eval()
        device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)  # the same mask/image choice every epoch, without touching training's random state
            inputs, targets = self.prepare_batch(self.batch, self.device)[:2]
        outputs = getattr(self.network, "module", self.network).reconstruct(inputs).clamp(0, 1)  # decodes the mean
        self.network.train(was_training)
        return [inputs.clamp(0, 1), outputs, targets]


class PipelinePreview:
    """Images an :class:`monai_xreal.XRealPipeline` (built on the EMA weights) generates for fixed conditions.

    Args:
        pipeline: the pipeline.
        conditions: keyword arguments of the pipeline call (``prompt``, ``anatomy``, ``pathology``, ``control``).
        num_inference_steps: few steps keep the preview cheap.
        seed: fixed, so grids of successive epochs compare.
    """

    def __init__(self, pipeline, conditions: Mapping, num_inference_steps: int = 20, seed: int = 0) -> None:
        self.pipeline, self.conditions = pipeline, dict(conditions)
        self.num_inference_steps, self.seed = num_inference_steps, seed

    def __call__(self) -> Rows:
        self.pipeline.clear_prompt_cache()  # the text encoder may be training with the UNet
        images = self.pipeline(**self.conditions, num_inference_steps=self.num_inference_steps, seed=self.seed)
        return [images]


class ImageGridSaver:
    """Handler: every ``interval`` epochs, save ``preview()``'s rows as one PNG grid.

    Writes ``<output_dir>/<name>_epoch<E>.png`` (rank-0 only under DDP: attach it in the rank-0 handler list).

    Args:
        preview: returns rows of ``(N, 1, H, W)`` images in [0, 1].
        output_dir: where the grids go.
        name: file name prefix.
        interval: epochs between grids.
    """

    def __init__(self, preview: Callable[[], Rows], output_dir: str | Path, name: str = "validation",
                 interval: int = 1) -> None:  # fmt: skip
        self.preview, self.output_dir, self.name, self.interval = preview, Path(output_dir), name, interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> Path:
        rows = [row.detach().float().cpu() for row in self.preview()]
        columns = max(len(row) for row in rows)
        tiles = [overlay_masks(image.numpy()) for row in rows for image in row]
        grid = image_grid(tiles if len(rows) == 1 else _pad_rows(tiles, rows, columns), columns)
        return save_rgb(grid, self.output_dir / f"{self.name}_epoch{engine.state.epoch:04d}.png")


def _pad_rows(tiles: list[np.ndarray], rows: Rows, columns: int) -> list[np.ndarray]:
    """Blank tiles so that every preview row starts a grid row."""
    out, index = [], 0
    blank = np.full_like(tiles[0], 255)
    for row in rows:
        out.extend(tiles[index : index + len(row)])
        out.extend([blank] * (columns - len(row)))
        index += len(row)
    return out
