# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Fréchet distance between real and generated images in a feature extractor's space, by MONAI's ``FIDMetric``."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from monai.metrics import FIDMetric
from torch import nn

__all__ = ["extract_features", "frechet_distance", "low_rank_frechet_distance"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(
    extractor: nn.Module, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 32
) -> torch.Tensor:
    """Features of many images, a batch at a time.

    Args:
        extractor: a feature extractor (``monai_xreal.metrics.extractors``): ``(B, 1, H, W)`` in [0, 1] to
            ``(B, D)``.
        images: ``(N, 1, H, W)`` images in [0, 1], or an iterable of such batches (or of ``(1, H, W)`` images).
        batch_size: images per extractor call.

    Returns:
        ``(N, D)`` float32 features on the CPU.
    """
    device = next(extractor.parameters()).device
    pending: list[torch.Tensor] = []
    features: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            batch = torch.cat(pending).to(device=device, dtype=torch.float32)
            features.append(extractor(batch).float().cpu())
            pending.clear()

    chunks = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    for chunk in chunks:
        pending.append(chunk if chunk.ndim == 4 else chunk[None])
        if sum(len(p) for p in pending) >= batch_size:
            flush()
    flush()
    if not features:
        raise ValueError("no images to extract features from")
    return torch.cat(features)


def frechet_distance(real: torch.Tensor, generated: torch.Tensor) -> float:
    """FID between two sets of features: Gaussian fits, then the Fréchet distance (MONAI's ``FIDMetric``).

    Zero for identical sets, symmetric, and growing with a shift of either set. With no more samples than feature
    dimensions the covariances are singular: MONAI's matrix square root then fails, and the trace term is taken
    exactly from the samples instead (:func:`low_rank_frechet_distance`). Such values are biased upwards and only
    comparable at equal sample counts; the field uses 1,000-5,000 images.

    Args:
        real: ``(N, D)`` features of real images.
        generated: ``(M, D)`` features of generated images.

    Raises:
        ValueError: shapes that disagree, or fewer than two samples in a set.
    """
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got {tuple(real.shape)}, {tuple(generated.shape)}")
    if min(len(real), len(generated)) < 2:
        raise ValueError("FID needs at least two images in each set")
    if min(len(real), len(generated)) <= real.shape[1]:
        logger.warning(
            "FID on %d real / %d generated images with %d-d features: fewer samples than dimensions, so the value "
            "is biased upwards and only comparable at the same sample counts",
            len(real), len(generated), real.shape[1],
        )  # fmt: skip
        return low_rank_frechet_distance(real, generated)
    try:
        return float(FIDMetric()(generated.double(), real.double()))
    except ValueError:  # MONAI: sqrt(S1 S2) came out complex, the product being numerically singular
        return low_rank_frechet_distance(real, generated)


def low_rank_frechet_distance(real: torch.Tensor, generated: torch.Tensor) -> float:
    """The Fréchet distance computed from the samples, exact whatever their number.

    With ``X``, ``Y`` the centred features scaled by ``1/sqrt(n - 1)``, the covariances are ``X^T X`` and ``Y^T Y``,
    and the non-zero eigenvalues of their product are those of ``(X Y^T)(X Y^T)^T``; so
    ``tr sqrt(S1 S2)`` is the nuclear norm of ``X Y^T``, an ``N x M`` matrix with no square root to take.
    """
    x = real.double() - real.double().mean(dim=0)
    y = generated.double() - generated.double().mean(dim=0)
    x, y = x / (len(x) - 1) ** 0.5, y / (len(y) - 1) ** 0.5
    mean_term = (real.double().mean(dim=0) - generated.double().mean(dim=0)).square().sum()
    trace_sqrt = torch.linalg.svdvals(x @ y.T).sum()
    return float(mean_term + x.square().sum() + y.square().sum() - 2 * trace_sqrt)


def kernel_distance(real: torch.Tensor, generated: torch.Tensor) -> float:
    """KID: the unbiased squared MMD between two feature sets with the cubic polynomial kernel
    ``k(x, y) = (x . y / D + 1) ** 3`` (Binkowski et al. 2018).

    Unlike FID it has no bias at small sample counts (its expectation is 0 for two sets from one distribution, so
    small negative values occur), which makes it the realism figure for tables of a few dozen images.

    Args:
        real: ``(N, D)`` features of real images.
        generated: ``(M, D)`` features of generated images.
    """
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got {tuple(real.shape)}, {tuple(generated.shape)}")
    n, m = len(real), len(generated)
    if min(n, m) < 2:
        raise ValueError("KID needs at least two images in each set")
    x, y = real.double(), generated.double()

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / a.shape[1] + 1) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * kxy.mean())
