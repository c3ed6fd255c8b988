# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The Python API's inputs: axis order said at every entry, PIL images brought to reader order, MetaTensor out."""

import numpy as np
import pytest
import torch
from conftest import save_mask
from monai.data import MetaTensor
from monai.transforms import LoadImage
from PIL import Image

from monai_xreal.errors import XRealInputError
from monai_xreal.pipeline.conditions import PrepareConditions, to_reader_order


def _asymmetric_anatomy() -> np.ndarray:
    """A (rows, columns) = (y, x) label map that is not its own transpose: one lung only, at the top left."""
    rows = np.zeros((32, 48), np.uint8)
    rows[4:20, 6:16] = 1
    return rows


def test_pil_images_and_row_major_arrays_come_out_in_monai_reader_order(tmp_path):
    rows = _asymmetric_anatomy()
    path = tmp_path / "anatomy.png"
    Image.fromarray(rows).save(path)
    reader = LoadImage(image_only=True, ensure_channel_first=True)(str(path))[0]  # what MONAI reads: (x, y)
    assert reader.shape == (48, 32)
    assert torch.equal(to_reader_order(Image.open(path)), torch.as_tensor(np.asarray(reader)))
    assert torch.equal(to_reader_order(rows, "rows"), torch.as_tensor(np.asarray(reader)))
    assert to_reader_order(reader) is reader  # reader order is the default: left as it is
    with pytest.raises(XRealInputError, match="layout"):
        to_reader_order(rows, "columns")


def test_the_pipeline_reads_a_pil_mask_as_loadimage_does(tiny_pipeline, tmp_path):
    rows = np.zeros((32, 32), np.uint8)
    rows[2:30, 4:14] = 1  # a right lung: tall and thin in the picture
    path = save_mask(rows.T[None], tmp_path, "lung")  # save_mask takes reader order
    loaded = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    kwargs = dict(num_inference_steps=2, seed=0)
    from_pil = tiny_pipeline(anatomy=Image.open(path), **kwargs)
    assert torch.equal(from_pil, tiny_pipeline(anatomy=loaded, **kwargs))
    assert torch.equal(from_pil, tiny_pipeline(anatomy=np.asarray(Image.open(path)), layout="rows", **kwargs))


def test_output_is_a_metatensor_keeping_the_input_affine(tiny_pipeline):
    anatomy = np.zeros((1, 64, 64), np.float32)
    anatomy[0, 8:40, 10:30] = 1
    affine = torch.diag(torch.tensor([0.5, 0.25, 1.0, 1.0], dtype=torch.float64))
    affine[:2, 3] = torch.tensor([10.0, -4.0], dtype=torch.float64)
    images = tiny_pipeline(anatomy=MetaTensor(anatomy, affine=affine), num_inference_steps=1, seed=0)
    assert isinstance(images, MetaTensor) and images.shape == (1, 1, 32, 32)
    # the 32x32 model grid spans the same extent as the 64x64 input: twice the pixel size
    torch.testing.assert_close(images.affine[:2, :2].diag(), torch.tensor([1.0, 0.5], dtype=torch.float64))
    plain = tiny_pipeline(anatomy=torch.as_tensor(anatomy), num_inference_steps=1, seed=0)
    assert isinstance(plain, MetaTensor) and torch.equal(plain.as_tensor(), images.as_tensor())


def test_conditions_are_checked_against_each_other():
    prepare = PrepareConditions((32, 32), [0, 1, 2, 3, 4])
    with pytest.raises(
        XRealInputError, match="pathology: shape \\(16, 16\\) differs from the anatomy map's \\(32, 32\\)"
    ):
        prepare({"anatomy": torch.ones(32, 32), "pathology": torch.ones(16, 16), "prompt": "Edema"})
    data = prepare({"anatomy": torch.ones(64, 64), "pathology": torch.ones(64, 64), "prompt": ["Edema"]})
    assert data["anatomy"].shape == data["pathology"].shape == (1, 1, 32, 32) and data["input_shape"] == (64, 64)
    with pytest.warns(UserWarning, match="stretched"):
        prepare({"anatomy": torch.ones(64, 32)})
