# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Editing a radiograph inside a region (XRealPipeline.edit): what must hold, on the tiny pipeline."""

import pytest
import torch

from monai_xreal.control import feather_inside
from monai_xreal.errors import XRealInputError
from monai_xreal.pipeline.editing import SquareGrid

SHAPE = (50, 38)  # not square, not the model's grid: the image keeps its own size


@pytest.fixture()
def radiograph() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    rows = torch.linspace(0.2, 0.8, SHAPE[1])[None, :].expand(SHAPE)  # a smooth image with noise on top
    return (rows + 0.05 * torch.randn(SHAPE, generator=generator)).clamp(0, 1)[None, None]


@pytest.fixture()
def region() -> torch.Tensor:
    mask = torch.zeros(1, 1, *SHAPE)
    mask[..., 10:30, 8:26] = 1
    return mask


def test_square_grid_pads_resizes_and_comes_back_to_the_input_grid():
    grid = SquareGrid(SHAPE, (16, 16))
    assert grid.scale == pytest.approx(50 / 16)
    image = torch.rand(2, 1, *SHAPE)
    small = grid.to_grid(image)
    assert small.shape == (2, 1, 16, 16)
    assert grid.from_grid(small).shape == image.shape
    constant = torch.full((1, 1, *SHAPE), 0.3)  # edge padding: a flat image stays flat, no black border
    torch.testing.assert_close(grid.to_grid(constant), torch.full((1, 1, 16, 16), 0.3))
    torch.testing.assert_close(grid.from_grid(grid.to_grid(constant)), constant)
    mask = torch.zeros(1, 1, *SHAPE)
    mask[..., 0, 0] = 1  # one input pixel marks the model pixels that cover it (one, or two where bins overlap)
    assert 1 <= grid.mask_to_grid(mask).sum() <= 2 and not grid.mask_to_grid(torch.zeros_like(mask)).any()


def test_the_feather_lies_inside_the_region(region):
    weight = feather_inside(region, sigma=2.0)
    assert weight[region == 0].abs().max() == 0
    assert weight[..., 20, 17] == pytest.approx(1.0, abs=1e-3)  # deep inside
    assert 0 < weight[..., 10, 17] < 0.5  # on the border: faded in
    assert torch.equal(feather_inside(region, 0.0), region)


def test_an_edit_changes_the_region_only_and_repeats_by_seed(responsive_pipeline, radiograph, region):
    pipe = responsive_pipeline
    edited = pipe.edit(radiograph, region, "Pleural Effusion", seed=3, num_inference_steps=3, guidance_scale=3.0)
    assert edited.shape == radiograph.shape
    assert torch.equal(edited[region == 0], radiograph[region == 0])  # bit for bit outside
    assert (edited - radiograph)[region > 0].abs().mean() > 0.01
    again = pipe.edit(radiograph, region, "Pleural Effusion", seed=3, num_inference_steps=3, guidance_scale=3.0)
    assert torch.equal(edited, again)
    other_prompt = pipe.edit(radiograph, region, "No Finding", seed=3, num_inference_steps=3, guidance_scale=3.0)
    assert not torch.equal(edited, other_prompt)
    boxes = pipe.edit(radiograph, [[[10, 8, 30, 26]]], "Pleural Effusion", seed=3, num_inference_steps=3,
                      guidance_scale=3.0)  # fmt: skip
    assert torch.equal(boxes, edited)


def test_a_batch_edits_as_its_samples_do_alone(responsive_pipeline, radiograph, region):
    pipe = responsive_pipeline
    images, regions = torch.cat([radiograph, radiograph.flip(-1)]), torch.cat([region, region.flip(-2)])
    batch = pipe.edit(images, regions, ["Edema", "Cardiomegaly"], seed=[4, 7], num_inference_steps=2)
    alone = pipe.edit(images[1:], regions[1:], ["Cardiomegaly"], seed=[7], num_inference_steps=2)
    torch.testing.assert_close(batch[1:], alone, atol=1e-4, rtol=0)  # batched CPU kernels round differently


def test_the_keep_region_stays_even_inside_the_edit_region(responsive_pipeline, radiograph, region):
    keep = torch.zeros_like(region)
    keep[..., 10:20, 8:26] = 1  # the upper half of the edit region
    edited = responsive_pipeline.edit(radiograph, region, "Nodule", keep=keep, seed=0, num_inference_steps=2)
    assert torch.equal(edited[keep > 0], radiograph[keep > 0])
    assert not torch.equal(edited[(region > 0) & (keep == 0)], radiograph[(region > 0) & (keep == 0)])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda image, region: (image, region[..., :40, :]), "differs from the image's"),
        (lambda image, region: (image, torch.zeros_like(region)), "is empty"),
        (lambda image, region: (image, torch.ones_like(region)), "covers the whole"),
        (lambda image, region: (image * 3, region), "must lie in [0, 1]"),
    ],
    ids=["size", "empty", "whole image", "range"],
)
def test_bad_edit_requests_are_refused(tiny_pipeline, radiograph, region, change, message):
    image, mask = change(radiograph, region)
    with pytest.raises(XRealInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tiny_pipeline.edit(image, mask, "Edema", seed=0, num_inference_steps=1)


def test_a_keep_region_covering_the_edit_region_is_refused(tiny_pipeline, radiograph, region):
    with pytest.raises(XRealInputError, match="once the keep region is taken out"):
        tiny_pipeline.edit(radiograph, region, "Edema", keep=region, seed=0, num_inference_steps=1)


def test_a_region_narrower_than_the_feather_still_takes_the_full_change_in_its_middle():
    narrow = torch.zeros(1, 1, 100, 100)
    narrow[..., 40:46, 10:90] = 1
    weight = feather_inside(narrow, sigma=30.0)
    assert weight.max() > 0.95 and weight[narrow == 0].abs().max() == 0
