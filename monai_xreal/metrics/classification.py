# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Multi-label ROC AUC that skips the labels a validation set cannot score."""

from __future__ import annotations

import warnings

import numpy as np
from monai.handlers import IgniteMetricHandler
from monai.metrics import ROCAUCMetric, compute_roc_auc

__all__ = ["PresentLabelsROCAUC", "PresentLabelsROCAUCMetric"]


class PresentLabelsROCAUCMetric(ROCAUCMetric):
    """Macro ROC AUC over the labels that have both positives and negatives in the data seen.

    MONAI's macro average is NaN as soon as one label has no positive (a rare finding missing from a small
    validation split), which also stops best-model selection from ever improving; this mean leaves such labels
    out. ``NaN`` only when no label can be scored.
    """

    def aggregate(self, average=None) -> float:  # type: ignore[override]
        y_pred, y = self.get_buffer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns for each unscorable label; that is the point here
            per_label = np.asarray(compute_roc_auc(y_pred=y_pred, y=y, average="none"), dtype=float).reshape(-1)
        scored = per_label[~np.isnan(per_label)]
        return float(scored.mean()) if scored.size else float("nan")


class PresentLabelsROCAUC(IgniteMetricHandler):
    """Ignite handler of :class:`PresentLabelsROCAUCMetric` (bundle configs: ``key_metric``)."""

    def __init__(self, output_transform=lambda x: x) -> None:
        super().__init__(metric_fn=PresentLabelsROCAUCMetric(), output_transform=output_transform, save_details=False)
