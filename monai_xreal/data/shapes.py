# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A drawn anatomy label map (ellipses) for sample conditions and tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["draw_anatomy", "draw_box"]


def _ellipse(grid_x: np.ndarray, grid_y: np.ndarray, centre, radii) -> np.ndarray:
    return ((grid_x - centre[0]) / radii[0]) ** 2 + ((grid_y - centre[1]) / radii[1]) ** 2 <= 1.0


def draw_anatomy(spatial_shape: Sequence[int] = (256, 256)) -> np.ndarray:
    """A PA-view anatomy label map in MONAI's array order (axis 0 = image x, left to right; axis 1 = y, down).

    Labels: 1 the patient's right lung (on the image's left), 2 the left lung, 3 the heart (lower middle,
    towards the patient's left), 4 the upper mediastinum.

    Returns:
        ``(1, X, Y)`` uint8 label map.
    """
    nx, ny = spatial_shape
    x, y = np.meshgrid(np.linspace(0, 1, nx), np.linspace(0, 1, ny), indexing="ij")
    labels = np.zeros((nx, ny), np.uint8)
    labels[_ellipse(x, y, (0.31, 0.5), (0.15, 0.32))] = 1
    labels[_ellipse(x, y, (0.69, 0.5), (0.15, 0.32))] = 2
    labels[_ellipse(x, y, (0.55, 0.68), (0.15, 0.13))] = 3
    labels[_ellipse(x, y, (0.5, 0.22), (0.05, 0.1))] = 4
    return labels[None]


def draw_box(spatial_shape: Sequence[int], box: Sequence[float]) -> np.ndarray:
    """``(1, X, Y)`` uint8 mask, 1 inside ``box = (x0, y0, x1, y1)`` given as fractions of the image."""
    nx, ny = spatial_shape
    mask = np.zeros((1, nx, ny), np.uint8)
    mask[0, int(box[0] * nx) : int(box[2] * nx), int(box[1] * ny) : int(box[3] * ny)] = 1
    return mask
