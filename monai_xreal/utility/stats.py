# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Per-label and mean ROC AUC of the protocols, with bootstrap confidence intervals over seeds and test images.

The point estimate of a protocol is the mean over its seeds of MONAI's ``compute_roc_auc`` on the whole test set
(per label; the mean AUC averages the labels). A bootstrap replicate draws the seeds (with replacement, as many as
there are) and the test images (with replacement, as many as there are) and recomputes the same statistic; the
interval is the replicates' percentile interval. One draw serves every protocol, so the differences between
protocols (``delta``) are paired. A replicate whose test images lack the positives or the negatives of a label
gives no AUC for that label (and no mean); it is left out and the count of usable replicates reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_roc_auc

__all__ = ["bootstrap_auc", "roc_auc_per_label", "weighted_roc_auc"]


def roc_auc_per_label(probabilities, truth) -> np.ndarray:
    """MONAI's ``compute_roc_auc`` of each column: ``(N, L)`` probabilities and 0/1 truth -> ``(L,)`` (NaN where
    a label has no positive or no negative)."""
    y_pred = torch.as_tensor(np.asarray(probabilities, dtype=np.float64))
    y = torch.as_tensor(np.asarray(truth, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns for each label without positives; NaN says it here
        values = compute_roc_auc(y_pred=y_pred, y=y, average="none")
    return np.asarray(values, dtype=np.float64).reshape(-1)


def weighted_roc_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for ``positive`` under each row of ``weights`` (how often each image is drawn).

    The Mann-Whitney form: the weighted share of (positive, negative) pairs ordered correctly, ties counting one
    half, so all-ones weights give ``compute_roc_auc``'s value.

    Args:
        scores: ``(N,)`` probabilities.
        positive: ``(N,)`` bool truth.
        weights: ``(B, N)`` non-negative weights (bootstrap counts).

    Returns:
        ``(B,)`` AUCs, NaN for rows that weigh no positive or no negative.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = np.asarray(scores)[order]
    is_positive = np.asarray(positive, dtype=bool)[order]
    w = np.asarray(weights, dtype=np.float64)[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # groups of tied scores
    positive_weight = np.add.reduceat(w * is_positive, starts, axis=1)
    negative_weight = np.add.reduceat(w * ~is_positive, starts, axis=1)
    below = np.cumsum(negative_weight, axis=1) - negative_weight
    correct = (positive_weight * (below + 0.5 * negative_weight)).sum(axis=1)
    pairs = positive_weight.sum(axis=1) * negative_weight.sum(axis=1)
    return np.where(pairs > 0, correct / np.where(pairs > 0, pairs, 1.0), np.nan)


def _interval(values: np.ndarray, confidence: float) -> tuple[float | None, float | None, int]:
    kept = values[~np.isnan(values)]
    if not kept.size:
        return None, None, 0
    low, high = np.percentile(kept, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high), int(kept.size)


def _summary(point: float, per_seed: Sequence[float] | None, replicates: np.ndarray, confidence: float) -> dict:
    low, high, kept = _interval(replicates, confidence)
    out = {"mean": float(point), "low": low, "high": high, "replicates": kept}
    if per_seed is not None:
        out["per_seed"] = [float(v) for v in per_seed]
        out["std_over_seeds"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
    return out


def bootstrap_auc(
    predictions: Mapping[str, np.ndarray],
    truth: np.ndarray,
    classes: Sequence[str],
    num_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    reference: str | None = "real",
) -> dict[str, dict]:
    """Per-label and mean AUC of each protocol with bootstrap confidence intervals over seeds and test images.

    Args:
        predictions: protocol -> ``(K, N, L)`` test-set probabilities of its ``K`` seeds (the same ``K`` for all).
        truth: ``(N, L)`` 0/1 test labels.
        classes: the ``L`` label names.
        num_samples: bootstrap replicates.
        confidence: the interval's coverage (0.95: the 2.5th to 97.5th percentile).
        seed: the bootstrap's random seed.
        reference: the protocol the others are compared with (``delta``: paired differences of the mean AUC and
            of each label's AUC); ``None`` or absent: no comparison.

    Returns:
        protocol -> ``{"per_label": {label: summary}, "mean_auc": summary, "delta_vs_<reference>": ...}``, where a
        summary is ``{"mean", "low", "high", "replicates", "per_seed", "std_over_seeds"}``.
    """
    truth = np.asarray(truth).astype(bool)
    num_images, num_labels = truth.shape
    seeds = {np.asarray(p).shape[0] for p in predictions.values()}
    if len(seeds) != 1:
        raise ValueError(f"every protocol needs the same number of seeds, got {sorted(seeds)}")
    num_seeds = seeds.pop()
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_images, size=(num_samples, num_images))
    offsets = (np.arange(num_samples)[:, None] * num_images + draws).ravel()
    weights = np.bincount(offsets, minlength=num_samples * num_images).reshape(num_samples, num_images)
    seed_draws = rng.integers(0, num_seeds, size=(num_samples, num_seeds))
    rows = np.arange(num_samples)[:, None]
    point, replicated = {}, {}
    for name, probabilities in predictions.items():
        probabilities = np.asarray(probabilities, dtype=np.float64)
        point[name] = np.stack([roc_auc_per_label(p, truth) for p in probabilities])  # (K, L)
        per_seed_replicates = np.stack(
            [np.stack([weighted_roc_auc(p[:, j], truth[:, j], weights) for j in range(num_labels)], axis=-1)
             for p in probabilities], axis=1,
        )  # fmt: skip  # (B, K, L)
        replicated[name] = per_seed_replicates[rows, seed_draws].mean(axis=1)  # (B, L): seeds drawn, then averaged
    results = {}
    for name in predictions:
        per_label = {
            label: _summary(point[name][:, j].mean(), point[name][:, j], replicated[name][:, j], confidence)
            for j, label in enumerate(classes)
        }
        mean_per_seed = point[name].mean(axis=1)
        results[name] = {
            "per_label": per_label,
            "mean_auc": _summary(mean_per_seed.mean(), mean_per_seed, replicated[name].mean(axis=1), confidence),
        }
        if reference in predictions and name != reference:
            difference = replicated[name] - replicated[reference]
            point_difference = point[name].mean(axis=0) - point[reference].mean(axis=0)
            results[name][f"delta_vs_{reference}"] = {
                "mean_auc": _summary(point_difference.mean(), None, difference.mean(axis=1), confidence),
                "per_label": {label: _summary(point_difference[j], None, difference[:, j], confidence)
                              for j, label in enumerate(classes)},  # fmt: skip
            }
    return results
