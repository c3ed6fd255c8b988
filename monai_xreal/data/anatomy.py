# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The anatomy label map's conventions in one place: label values, how organ masks combine into one map, where the
upper mediastinum is, and the cardiothoracic ratio as measured on the masks.

Arrays here are image rows by columns (``(H, W)``, row 0 at the top, column 0 on the image's left, where a PA
radiograph shows the patient's right lung).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["ANATOMY_LABELS", "cardiothoracic_ratio", "compose_label_map", "largest_component", "upper_mediastinum"]

ANATOMY_LABELS = {"right_lung": 1, "left_lung": 2, "heart": 3, "upper_mediastinum": 4}


def compose_label_map(right_lung, left_lung, heart, mediastinum) -> np.ndarray:
    """``(H, W)`` uint8 with :data:`ANATOMY_LABELS` (0 background); where masks overlap the heart wins, then the
    mediastinum, then the left lung."""
    labels = np.zeros(np.shape(heart), np.uint8)
    labels[np.asarray(right_lung, bool)] = ANATOMY_LABELS["right_lung"]
    labels[np.asarray(left_lung, bool)] = ANATOMY_LABELS["left_lung"]
    labels[np.asarray(mediastinum, bool)] = ANATOMY_LABELS["upper_mediastinum"]
    labels[np.asarray(heart, bool)] = ANATOMY_LABELS["heart"]
    return labels


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a binary mask (itself when it has one or none)."""
    components, count = ndimage.label(mask)
    if count <= 1:
        return np.asarray(mask, bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def upper_mediastinum(
    right_lung: np.ndarray, left_lung: np.ndarray, heart: np.ndarray, heart_top: int, midline: float
) -> np.ndarray:
    """The upper mediastinum: between the lungs' inner edges, from just below the apices down to the top of the
    heart, at most 9 % of the thoracic width either side of the midline.

    Args:
        right_lung, left_lung, heart: ``(H, W)`` bool masks.
        heart_top: the first row of the heart.
        midline: the body's midline column.
    """
    size_y, size_x = heart.shape
    both = right_lung | left_lung
    rows, columns = np.flatnonzero(both.any(1)), np.flatnonzero(both.any(0))
    if len(rows) == 0:
        return np.zeros_like(heart, bool)
    top, bottom = rows[0], rows[-1] + 1
    thoracic = columns[-1] + 1 - columns[0]
    yy, xx = np.mgrid[0:size_y, 0:size_x].astype(np.float32)
    inner_right = np.where(right_lung.any(1), size_x - 1 - np.argmax(right_lung[:, ::-1], 1), -1)
    inner_left = np.where(left_lung.any(1), np.argmax(left_lung, 1), size_x)
    cap = 0.09 * thoracic
    low = np.maximum(inner_right + 1, midline - cap)[:, None]
    high = np.minimum(inner_left, midline + cap)[:, None]
    band = (yy >= top + 0.03 * (bottom - top)) & (yy < heart_top)
    return band & (xx >= low) & (xx < high) & ~(both | heart)


def cardiothoracic_ratio(right_lung: np.ndarray, left_lung: np.ndarray, heart: np.ndarray) -> float:
    """The widest heart extent over the outer width of lungs and heart (the internal thoracic diameter's stand-in),
    as a reader measures it on a PA film; ``nan`` without a heart."""
    heart_columns = np.flatnonzero(heart.any(0))
    chest_columns = np.flatnonzero((right_lung | left_lung | heart).any(0))
    if len(heart_columns) == 0:
        return float("nan")
    return float((heart_columns[-1] + 1 - heart_columns[0]) / (chest_columns[-1] + 1 - chest_columns[0]))
