# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Intra-prompt diversity: MS-SSIM between the samples drawn for one condition (lower is more diverse)."""

from __future__ import annotations

import itertools

import torch
from monai.metrics import MultiScaleSSIMMetric

__all__ = ["MS_SSIM_WEIGHTS", "intra_condition_ms_ssim", "ms_ssim_weights"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Wang et al.'s five scale weights (MONAI's default)."""


def ms_ssim_weights(size: int, kernel_size: int = 11) -> tuple[float, ...]:
    """The first scales of :data:`MS_SSIM_WEIGHTS` that an image of side ``size`` supports, renormalised to sum 1.

    Five scales need a side of 176 or more for an 11-pixel window (MONAI's check); a 128-pixel image keeps four. The
    report records the weights used, since MS-SSIM values are only comparable at the same scales.

    Raises:
        ValueError: an image too small for even two scales.
    """
    for count in range(len(MS_SSIM_WEIGHTS), 1, -1):
        # MONAI's own check, and the coarsest scale must still hold one window
        if size // max(1, count - 1) ** 2 > kernel_size - 1 and size // 2 ** (count - 1) >= kernel_size:
            weights = MS_SSIM_WEIGHTS[:count]
            return tuple(w / sum(weights) for w in weights)
    raise ValueError(f"images of side {size} are too small for MS-SSIM with a {kernel_size}-pixel window")


@torch.no_grad()
def intra_condition_ms_ssim(samples: torch.Tensor, kernel_size: int = 11) -> float:
    """Mean MS-SSIM over all pairs of samples generated for one condition.

    Args:
        samples: ``(K, 1, H, W)`` images in [0, 1], ``K >= 2`` samples of the same condition (different seeds).
        kernel_size: Gaussian window (sigma 1.5, MONAI's default).

    Returns:
        the mean over the ``K (K - 1) / 2`` pairs, in [0, 1] for natural images; 1 means the samples are identical.
    """
    if samples.ndim != 4 or len(samples) < 2:
        raise ValueError(f"need (K, C, H, W) with K >= 2 samples, got {tuple(samples.shape)}")
    weights = ms_ssim_weights(min(samples.shape[2:]), kernel_size)
    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=kernel_size, weights=weights)
    pairs = list(itertools.combinations(range(len(samples)), 2))
    first = samples[[i for i, _ in pairs]].float()
    second = samples[[j for _, j in pairs]].float()
    return float(metric(first, second).mean())
