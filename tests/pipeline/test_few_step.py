# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Few-step controlled sampling and findings composited into their mask: the invariants, on the tiny pipeline."""

import pytest
import torch
import torch.nn.functional as F

from monai_xreal.benchmark.timing import time_networks
from monai_xreal.errors import XRealInputError

RECIPES = {
    "short anatomy stage": dict(num_inference_steps=3, anatomy_num_inference_steps=6, eta=1.0, blending="noise"),
    "data rule": dict(num_inference_steps=4, eta=0.0, blending="data"),
}


@pytest.fixture()
def pair(anatomy, pathology):
    return torch.cat([anatomy, anatomy.flip(-1)]), torch.cat([pathology, pathology.flip(-1)]), ["Edema", "Cardiomegaly"]


@pytest.mark.parametrize("recipe", list(RECIPES.values()), ids=list(RECIPES))
def test_few_step_recipes_repeat_and_do_not_depend_on_the_batch(responsive_pipeline, pair, recipe):
    pipe, (anatomy, pathology, prompts) = responsive_pipeline, pair
    batch = pipe(anatomy, pathology, prompts, seed=[5, 9], **recipe)
    assert torch.equal(batch, pipe(anatomy, pathology, prompts, seed=[5, 9], **recipe))
    alone = pipe(anatomy[1:], pathology[1:], prompts[1:], seed=[9], **recipe)
    torch.testing.assert_close(batch[1:], alone, atol=1e-4, rtol=0)  # batched CPU kernels round differently
    assert not torch.equal(batch, pipe(anatomy, pathology, prompts, seed=[6, 10], **recipe))


def test_a_short_anatomy_stage_costs_twelve_unet_evaluations_per_image(responsive_pipeline, pair):
    pipe, (anatomy, pathology, prompts) = responsive_pipeline, pair
    stages = []
    with time_networks(pipe, pipe.device) as times:
        pipe(anatomy, pathology, prompts, seed=1, callback=lambda stage, *_: stages.append(stage),
             guidance_scale=7.0, **RECIPES["short anatomy stage"])  # fmt: skip
    assert stages == ["anatomy"] * 6 + ["pathology"] * 3
    assert times.unet_samples / len(prompts) == 6 + 2 * 3  # guidance doubles the pathology stage's rows


def test_the_feathered_finding_changes_nothing_away_from_its_mask(responsive_pipeline, anatomy, pathology):
    pipe = responsive_pipeline
    common = dict(anatomy=anatomy, pathology=pathology, seed=4, num_inference_steps=4, guidance_scale=7.0)
    finding = pipe(prompt="Pneumothorax", pathology_feather=1.5, **common)
    counterfactual = pipe(prompt="", pathology_feather=1.5, **common)
    near = F.max_pool2d(pathology, 13, stride=1, padding=6) > 0  # the mask and 6 pixels around it (4 sigma)
    change = (finding - counterfactual).abs()
    assert change[~near].max() == 0  # the anatomy-stage image itself, not a decoded copy of it
    assert change[pathology > 0].mean() > 1e-3
    latent_only = pipe(prompt="Pneumothorax", pathology_feather=0.0, **common)
    assert (latent_only - counterfactual).abs()[~near].max() > 0  # what the compositing takes away


def test_new_knobs_are_checked(responsive_pipeline, anatomy, pathology):
    with pytest.raises(XRealInputError, match="blending"):
        responsive_pipeline(anatomy, pathology, "Edema", num_inference_steps=2, blending="pixels")
    with pytest.raises(XRealInputError, match="pathology_feather"):
        responsive_pipeline(anatomy, pathology, "Edema", num_inference_steps=2, pathology_feather=-1.0)
