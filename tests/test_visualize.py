# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Overlays: the tint is ``(1 - alpha) * grey + alpha * colour`` on the known labels only, the outline exact."""

import numpy as np
import pytest

from monai_xreal.visualize import ANATOMY_COLOURS, image_grid, overlay_masks


@pytest.mark.parametrize("alpha", [0.0, 0.35, 1.0])
def test_tint_is_the_alpha_blend_of_each_known_label(alpha):
    rng = np.random.default_rng(0)
    image, labels = rng.random((1, 12, 9)), rng.integers(0, 7, (1, 12, 9))  # 5 and 6 have no colour
    rgb = overlay_masks(image, labels, alpha=alpha)
    grey = np.repeat(image[0].T[..., None], 3, -1)
    expected = grey.copy()
    for label, colour in ANATOMY_COLOURS.items():
        where = labels[0].T == label
        expected[where] = (1 - alpha) * grey[where] + alpha * np.asarray(colour) / 255
    assert rgb.shape == (9, 12, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - (expected * 255 + 0.5).astype(int)).max() <= 1  # float32 rounding at most


def test_pathology_is_outlined_and_its_inside_left_alone():
    image = np.full((1, 7, 7), 0.5)
    mask = np.zeros((1, 7, 7), bool)
    mask[0, 1:6, 0:4] = True  # touches the image border on one side
    rgb = overlay_masks(image, pathology=mask)
    outline = np.all(rgb == (255, 0, 255), -1).T
    inside = np.zeros((7, 7), bool)
    inside[2:5, 0:3] = True  # the border side counts as inside the mask, so it is not outlined
    assert (outline == (mask[0] & ~inside)).all()
    assert (rgb[~outline.T] == 128).all()


def test_image_grid_lays_tiles_out_row_by_row():
    tiles = [np.full((2, 3), v, np.uint8) for v in (10, 20, 30)]
    grid = image_grid(tiles, columns=2, padding=1, background=0)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 3)
    assert (grid[1:3, 1:4] == 10).all() and (grid[1:3, 5:8] == 20).all() and (grid[4:6, 1:4] == 30).all()
