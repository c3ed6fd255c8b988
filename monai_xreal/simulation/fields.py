# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What a reader would outline on a simulated radiograph, from the path lengths the rays collected per structure.

- **Lung fields**: where the ray crosses at least 5 mm of one lung, no abdominal organ (above the diaphragm's
  silhouette) and not the heart; the medial part of each row that is thinner than half the row's thickest lung is
  mediastinum (in front of and behind the mediastinum the lungs meet, but a radiograph shows the mediastinal
  silhouette there). One piece per lung, holes filled, then widened by :data:`LUNG_MARGIN_MM` into what is not
  heart or the other lung: readers (and segmenters trained on their outlines) draw the lung field to the inner
  margin of the ribs, a few millimetres beyond where the lung's path length vanishes (calibrated against a lung
  segmenter trained on real radiographs, see the simulation docs).
- **Heart**: at least 25 mm of heart along the ray; rows above the first one at least 25 % as wide as the widest
  are cut (the atrial roof and great-vessel roots rise narrow above the cardiac silhouette), then opened by a small
  disc, one piece, holes filled.
- **Upper mediastinum** and the cardiothoracic ratio: :mod:`monai_xreal.data.anatomy`'s rules.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from monai_xreal.data.anatomy import cardiothoracic_ratio, compose_label_map, largest_component, upper_mediastinum

__all__ = ["HEART_MM", "LUNG_MM", "anatomy_fields", "heart_field", "lung_field"]

LUNG_MM, HEART_MM, ABDOMEN_MM, MEDIASTINAL_RATIO, TOP_WIDTH = 5.0, 25.0, 5.0, 0.5, 0.25
LUNG_MARGIN_MM = 6.0


def lung_field(thickness: np.ndarray, side: str, excluded: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool lung field of one lung from its ``(H, W)`` path lengths (mm); ``side`` is the patient's
    (``"right"`` on the image's left, so its medial side is towards higher columns)."""
    lung = (thickness > LUNG_MM) & ~excluded
    peak_column = thickness.argmax(1)[:, None]
    peak = thickness.max(1, keepdims=True)
    columns = np.arange(thickness.shape[1])[None, :]
    medial = columns > peak_column if side == "right" else columns < peak_column
    lung &= ~(medial & (thickness < MEDIASTINAL_RATIO * peak))
    return ndimage.binary_fill_holes(largest_component(lung))


def heart_field(thickness: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool cardiac silhouette from the heart's ``(H, W)`` path lengths (mm)."""
    heart = thickness > HEART_MM
    widths = heart.sum(1)
    if widths.max() > 0:
        heart[: int(np.argmax(widths >= TOP_WIDTH * widths.max()))] = False
    radius = max(1, int(round(0.012 * thickness.shape[0])))
    disc = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    heart = ndimage.binary_opening(heart, structure=disc)
    return ndimage.binary_fill_holes(largest_component(heart)) if heart.any() else heart


def _widen(lung: np.ndarray, blocked: np.ndarray, pixels: float) -> np.ndarray:
    if pixels <= 0:
        return lung
    near = ndimage.distance_transform_edt(~lung) <= pixels
    return lung | (near & ~blocked)


def anatomy_fields(thickness: dict[str, torch.Tensor], pixel_mm: float = 1.0) -> tuple[np.ndarray, dict]:
    """The ``(H, W)`` uint8 anatomy label map from path lengths ``{"right_lung", "left_lung", "heart",
    "abdomen"}`` (each ``(H, W)`` mm) on pixels of ``pixel_mm``, and facts about it (``ctr``, ``midline``)."""
    t = {k: v.numpy() for k, v in thickness.items()}
    heart = heart_field(t["heart"])
    excluded = (t["abdomen"] > ABDOMEN_MM) | heart
    right = lung_field(t["right_lung"], "right", excluded)
    left = lung_field(t["left_lung"], "left", excluded | right)
    margin = LUNG_MARGIN_MM / pixel_mm
    right = _widen(right, heart | left, margin)
    left = _widen(left, heart | right, margin)
    both = right | left
    columns = np.flatnonzero(both.any(0))
    midline = 0.5 * (columns[0] + columns[-1] + 1) if len(columns) else heart.shape[1] / 2
    rows = np.flatnonzero(heart.any(1))
    heart_top = int(rows[0]) if len(rows) else heart.shape[0]
    mediastinum = upper_mediastinum(right, left, heart, heart_top, midline)
    labels = compose_label_map(right, left, heart, mediastinum)
    return labels, {"ctr": cardiothoracic_ratio(right, left, heart), "midline": float(midline)}
