# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Figures: mask overlays (tinted with MONAI's ``blend_images``) and image grids, written as PNG with Pillow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["ANATOMY_COLOURS", "condition_grid", "edit_figure", "image_grid", "overlay_masks", "save_rgb"]

# label -> RGB: right lung, left lung, heart, upper mediastinum
ANATOMY_COLOURS = {1: (66, 135, 245), 2: (52, 199, 89), 3: (235, 64, 52), 4: (245, 197, 66)}
_PATHOLOGY_COLOUR = (255, 0, 255)


def _rows_by_columns(array) -> np.ndarray:
    """A ``(1, X, Y)`` or ``(X, Y)`` array in MONAI order as an image-shaped ``(Y, X)`` numpy array."""
    array = np.asarray(array)
    return (array[0] if array.ndim == 3 else array).T


def _tint(rgb: np.ndarray, labels: np.ndarray, colours: Mapping[int, Sequence[int]], alpha: float) -> np.ndarray:
    """``(3, Y, X)`` ``rgb`` with each label of ``colours`` in ``labels`` blended in (MONAI's ``blend_images``)."""
    from matplotlib.colors import ListedColormap
    from monai.visualize import blend_images

    known = sorted(colours)
    table = np.zeros((len(known) + 1, 3), np.float32)  # row 0: everything else, left untinted
    table[1:] = np.asarray([colours[label] for label in known], np.float32) / 255
    index = np.zeros(labels.shape, np.int64)
    for row, label in enumerate(known, start=1):
        index[labels == label] = row
    weight = np.where(index > 0, np.float32(alpha), np.float32(0))[None]
    # the colour map's bins are [k, k + 1) / len(table): a row's centre picks its colour
    centres = ((index + 0.5) / len(table))[None].astype(np.float32)
    return blend_images(rgb, centres, alpha=weight, cmap=ListedColormap(table), rescale_arrays=False)


def overlay_masks(image, anatomy=None, pathology=None, alpha: float = 0.35) -> np.ndarray:
    """An RGB view of a CXR with its anatomy labels tinted and the pathology mask outlined.

    Args:
        image: ``(1, X, Y)`` or ``(X, Y)`` in [0, 1], MONAI order.
        anatomy: label map of the same shape (colours from :data:`ANATOMY_COLOURS`), or None.
        pathology: binary mask of the same shape, drawn as a magenta outline, or None.
        alpha: tint strength.

    Returns:
        ``(Y, X, 3)`` uint8, ready for :func:`save_rgb`.
    """
    grey = np.clip(_rows_by_columns(image).astype(np.float32), 0.0, 1.0)
    rgb = np.repeat(grey[None], 3, axis=0)
    if anatomy is not None:
        rgb = _tint(rgb, _rows_by_columns(anatomy).astype(np.int64), ANATOMY_COLOURS, alpha)
    if pathology is not None:
        mask = _rows_by_columns(pathology) > 0
        # the mask's edge: what a one-pixel cross erosion removes (outside the image counts as inside the mask)
        edge = mask & ~ndimage.binary_erosion(mask, border_value=1)
        rgb = _tint(rgb, edge.astype(np.int64), {1: _PATHOLOGY_COLOUR}, 1.0)
    return (np.moveaxis(rgb, 0, -1) * 255 + 0.5).astype(np.uint8)


def image_grid(tiles: Sequence[np.ndarray], columns: int, padding: int = 2, background: int = 255) -> np.ndarray:
    """Tiles ``(H, W)`` or ``(H, W, 3)`` uint8 of one size laid out row by row; returns ``(H', W', 3)`` uint8."""
    if not tiles:
        raise ValueError("no tiles to lay out")
    tiles = [np.repeat(t[..., None], 3, -1) if t.ndim == 2 else t for t in tiles]
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, 3), background, np.uint8
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = padding + r * (height + padding), padding + c * (width + padding)
        grid[y : y + height, x : x + width] = tile
    return grid


def condition_grid(samples: Sequence[tuple], columns: int = 4) -> np.ndarray:
    """Each ``(image, anatomy, pathology)`` as two tiles, the image and its overlay, laid out ``columns`` pairs wide."""
    tiles = []
    for image, anatomy, pathology in samples:
        tiles.append(overlay_masks(image))
        tiles.append(overlay_masks(image, anatomy, pathology))
    return image_grid(tiles, 2 * columns)


def edit_figure(before, after, region, size: int = 512) -> np.ndarray:
    """An edit side by side: before, after (the region outlined) and the change ``|after - before|`` stretched to
    its largest value.

    Args:
        before, after: ``(1, X, Y)`` or ``(X, Y)`` images in [0, 1], MONAI order, of one size.
        region: ``(X, Y)`` binary mask of what the edit was allowed to change.
        size: the tiles' longest side in pixels (large radiographs are area-averaged down to it, small ones
            enlarged).

    Returns:
        ``(H, W, 3)`` uint8, ready for :func:`save_rgb`.
    """
    import torch
    import torch.nn.functional as F

    def small(array, mask: bool = False) -> np.ndarray:
        tensor = torch.as_tensor(np.asarray(array, dtype=np.float32)).reshape(1, 1, *np.shape(array)[-2:])
        scale = size / max(tensor.shape[-2:])
        shape = [max(1, round(s * scale)) for s in tensor.shape[-2:]]
        if scale > 1:  # small images are enlarged, pixels kept sharp
            out = F.interpolate(tensor, size=shape, mode="nearest-exact")
        else:
            out = F.adaptive_max_pool2d(tensor, shape) if mask else F.interpolate(tensor, size=shape, mode="area")
        return out[0, 0].numpy()

    before, after, region = small(before), small(after), small(region, mask=True) > 0
    change = np.abs(after - before)
    change = change / change.max() if change.max() > 0 else change
    tiles = [overlay_masks(before), overlay_masks(after, pathology=region), overlay_masks(change, pathology=region)]
    return image_grid(tiles, columns=3)


def save_rgb(array: np.ndarray, path: str | Path) -> Path:
    """Write a ``(H, W, 3)`` or ``(H, W)`` uint8 array as an image file (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
