# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""One batch of images for one condition: the unit that generation, datasets and replays share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from monai_xreal.control import scheduler_name
from monai_xreal.errors import XRealInputError

__all__ = ["sample_batch"]


def sample_batch(
    pipe,
    anatomy: torch.Tensor | None,
    pathology: torch.Tensor | None,
    prompt: str,
    seeds: Sequence[int],
    settings: Mapping[str, float],
    scheduler: str | None = None,
    callback=None,
) -> torch.Tensor:
    """``len(seeds)`` images of one condition, sample ``i`` drawn with ``seeds[i]``.

    Which seeds share a batch is part of how an image is made: the networks' results differ in the last bits
    between batch sizes, so replays and resumed datasets rebuild the same batches.

    Args:
        pipe: an :class:`~monai_xreal.XRealPipeline`.
        anatomy, pathology: ``(1, H, W)`` masks or ``None``.
        prompt: the prompt of every sample.
        seeds: one seed per sample.
        settings: sampling knobs by their ``__call__`` names (``num_inference_steps``, ``guidance_scale``...).
        scheduler: a scheduler name; the bundle's own when it names the bundle's kind (or is ``None``).
        callback: the pipeline's step callback.

    Returns:
        ``(len(seeds), 1, H, W)`` float images in [0, 1].
    """
    n = len(seeds)
    if scheduler is not None and scheduler == scheduler_name(pipe.scheduler):
        scheduler = None  # the bundle's configured scheduler, not a new one of the same kind
    images = pipe(
        anatomy=None if anatomy is None else anatomy[None].expand(n, -1, -1, -1),
        pathology=None if pathology is None else pathology[None].expand(n, -1, -1, -1),
        prompt=[prompt] * n,
        scheduler=scheduler,
        seed=[int(s) for s in seeds],
        callback=callback,
        **settings,
    )
    if not torch.isfinite(images).all():
        raise XRealInputError("bundle", "the networks produced NaN or infinite values")
    return images
