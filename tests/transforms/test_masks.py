# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from monai_xreal import XRealInputError
from monai_xreal.transforms import (
    AnatomyToControllerInput,
    AnatomyToControllerInputd,
    BoxesToMask,
    BoxesToMaskd,
    EnsureMask2D,
    EnsureMask2Dd,
    ValidateLabelMap,
    ValidateLabelMapd,
)


def test_ensure_mask_2d_squeezes_singleton_axes_and_rejects_the_rest():
    assert EnsureMask2D()(torch.zeros(1, 8, 6, 1)).shape == (1, 8, 6)
    with pytest.raises(XRealInputError, match="single-channel"):
        EnsureMask2D("anatomy")(torch.zeros(3, 8, 8))
    with pytest.raises(XRealInputError, match="2D"):
        EnsureMask2D("anatomy")(torch.zeros(1, 8, 8, 4))
    with pytest.raises(XRealInputError, match="^pathology"):
        EnsureMask2Dd(["anatomy", "pathology"])({"anatomy": torch.zeros(1, 4, 4), "pathology": torch.zeros(2, 4, 4)})


def test_validate_label_map():
    check = ValidateLabelMap([0, 1, 2, 3, 4])
    labels = torch.tensor([[[0, 1], [3, 4]]]).float()
    assert check(labels) is labels
    with pytest.raises(XRealInputError, match=r"labels \[5\]"):
        check(labels + 1)
    with pytest.raises(XRealInputError, match="non-integer"):
        check(labels + 0.5)
    with pytest.raises(XRealInputError, match="NaN"):
        check(torch.full((1, 2, 2), float("nan")))


def test_controller_input_and_boxes_compose_as_monai_transforms():
    pipeline = Compose([
        ValidateLabelMapd("anatomy", labels=range(5)),
        AnatomyToControllerInputd("anatomy", max_label=4),
        BoxesToMaskd("boxes", spatial_size=(8, 6)),
    ])  # fmt: skip
    out = pipeline({"anatomy": torch.tensor([[[0, 2], [4, 1]]]), "boxes": np.array([[1, 2, 3, 5], [6, 0, 8, 1]])})
    torch.testing.assert_close(out["anatomy"], torch.tensor([[[0.0, 0.5], [1.0, 0.25]]]))
    expected = torch.zeros(1, 8, 6)
    expected[0, 1:3, 2:5] = 1
    expected[0, 6:8, 0:1] = 1
    assert torch.equal(out["boxes"], expected)
    assert BoxesToMask((4, 4))(np.zeros((0, 4))).sum() == 0
    with pytest.raises(XRealInputError, match="invalid boxes"):
        BoxesToMask((4, 4))(np.array([[3, 3, 1, 1]]))
    assert AnatomyToControllerInput(4)(np.array([4]))[0] == 1.0
