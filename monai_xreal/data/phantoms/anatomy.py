# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A phantom's anatomy: real lung shapes placed and warped, a heart of a chosen cardiothoracic ratio, the upper
mediastinum between the lungs above it.

Arrays here are image rows by columns (``(S, S)``, row 0 at the top, column 0 on the image's left); the generator
turns them into MONAI's array order at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from monai_xreal.data.anatomy import (
    ANATOMY_LABELS,
    cardiothoracic_ratio,
    compose_label_map,
    largest_component,
    upper_mediastinum,
)
from monai_xreal.data.phantoms.lungs import LungShapes

__all__ = ["ANATOMY_LABELS", "Anatomy", "build_anatomy"]


@dataclass
class Anatomy:
    """Organ masks of one phantom, ``(S, S)`` bool each (rows, columns).

    ``right_lung`` is the patient's right lung, on the image's left. ``lung_box`` is ``(top, bottom, left, right)``
    of both lungs in pixels (bottom and right exclusive); ``ctr`` the cardiothoracic ratio measured on the masks
    (widest heart extent over the outer width of lungs and heart, the internal thoracic diameter's stand-in).
    """

    right_lung: np.ndarray
    left_lung: np.ndarray
    heart: np.ndarray
    mediastinum: np.ndarray
    lung_box: tuple[int, int, int, int]
    midline: float
    ctr: float

    def lung(self, side: str) -> np.ndarray:
        """The lung of the patient's ``"right"`` or ``"left"``."""
        return self.right_lung if side == "right" else self.left_lung

    def label_map(self) -> np.ndarray:
        """``(S, S)`` uint8 with :data:`ANATOMY_LABELS` (0 background)."""
        return compose_label_map(self.right_lung, self.left_lung, self.heart, self.mediastinum)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float, knots: int = 5) -> np.ndarray:
    """A smooth random ``(2, *shape)`` displacement field: random knots interpolated by cubic splines."""
    coarse = rng.normal(0.0, sigma, (2, knots, knots))
    return ndimage.zoom(coarse, (1, shape[0] / knots, shape[1] / knots), order=3, mode="nearest", grid_mode=True)


def _place_lungs(shapes: LungShapes, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    index = int(rng.integers(len(shapes)))
    width = rng.uniform(0.64, 0.76) * size
    height = min(width * shapes.aspects[index] * rng.uniform(0.92, 1.08), 0.76 * size)
    top = rng.uniform(0.07, min(0.13, 0.88 - height / size)) * size
    left = (0.5 + rng.normal(0.0, 0.012)) * size - width / 2
    r0, r1 = int(np.floor(top)), int(np.ceil(top + height)) + 1
    c0, c1 = max(int(np.floor(left)) - 1, 0), min(int(np.ceil(left + width)) + 2, size)
    rows, columns = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    grid = shapes.shapes.shape[-1]
    # canvas pixel -> shape grid, warped by a smooth field (about 2% of the grid) and a small rotation
    angle = np.deg2rad(rng.normal(0.0, 2.0))
    u, v = (columns - left) / width - 0.5, (rows - top) / height - 0.5
    u, v = u * np.cos(angle) - v * np.sin(angle), u * np.sin(angle) + v * np.cos(angle)
    warp = _smooth_field(rng, rows.shape, 0.02 * grid)
    coords = np.stack([(v + 0.5) * grid + warp[0], (u + 0.5) * grid + warp[1]])
    lungs = np.zeros((2, size, size), bool)
    for side in range(2):
        lungs[side, r0:r1, c0:c1] = ndimage.map_coordinates(shapes.shapes[index, side], coords, order=1) > 0.5
    return lungs[0], lungs[1]


def _extent(mask: np.ndarray, axis: int) -> np.ndarray:
    return np.flatnonzero(mask.any(axis))


def build_anatomy(shapes: LungShapes, rng: np.random.Generator, size: int, ctr: float) -> Anatomy:
    """Place a real lung pair and a heart whose width is ``ctr`` times the lungs' outer width.

    Args:
        shapes: the lung-shape library.
        rng: the phantom's random generator.
        size: canvas side in pixels.
        ctr: target cardiothoracic ratio (about 0.45 normal, above 0.5 cardiomegaly).
    """
    right_lung, left_lung = _place_lungs(shapes, rng, size)
    both = right_lung | left_lung
    rows, columns = _extent(both, 1), _extent(both, 0)
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    thoracic = right - left
    midline = (left + right) / 2 + rng.normal(0.0, 0.01) * thoracic

    # heart: two half-ellipses meeting at the midline, about a third of its width on the patient's right; flat at
    # the diaphragm, which cuts off its lower part
    heart_width = ctr * thoracic
    share_right = rng.uniform(0.28, 0.38)
    half_right, half_left = share_right * heart_width, (1 - share_right) * heart_width
    half_height = heart_width * rng.uniform(0.38, 0.45)
    floor = bottom - rng.uniform(0.03, 0.07) * (bottom - top)
    centre_y = floor - 0.6 * half_height
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx = xx - midline
    half = np.where(dx < 0, half_right, half_left)
    heart = ((dx / half) ** 2 + ((yy - centre_y) / half_height) ** 2 <= 1.0) & (yy <= floor)
    # the heart can cut slivers off a lung's base; a label map holds one piece per lung
    right_lung, left_lung = largest_component(right_lung & ~heart), largest_component(left_lung & ~heart)
    heart_top = int(np.floor(centre_y - half_height))
    mediastinum = upper_mediastinum(right_lung, left_lung, heart, heart_top, midline)
    measured = cardiothoracic_ratio(right_lung, left_lung, heart)  # on the final masks, as a reader would
    return Anatomy(
        right_lung, left_lung, heart, mediastinum, (top, bottom, left, right), float(midline), float(measured)
    )
