# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""XReal's defining rules, checked through what the sampler sees at every step (not by counting calls).

Two prompts with the same seed draw the same noise, so whatever the prompt cannot reach must be equal between them:
- the anatomy stage runs on the empty prompt when a pathology stage follows (the prompt rule): all equal;
- the pathology stage holds the re-encoded stage-1 image outside the mask at every step: equal there, not inside;
- the anatomy stage holds the controller's latent in the organs for round(fraction * steps) steps: equal there
  for those steps, then free.
"""

import pytest
import torch

from monai_xreal.control import latent_region
from monai_xreal.pipeline import ControlNetPipeline

STEPS = 6


def _trace(pipe, **kwargs) -> dict:
    seen = {}

    def record(stage, index, t, latents):
        seen[(stage, index)] = latents.clone()

    images = pipe(num_inference_steps=STEPS, seed=3, callback=record, **kwargs)
    return {"images": images, **seen}


@pytest.fixture(params=["noise", "data"])
def two_prompts(request, responsive_pipeline, anatomy, pathology):
    """Both blending rules keep XReal's rules."""
    common = dict(anatomy=anatomy, pathology=pathology, guidance_scale=7.0, blending=request.param)
    pipe = responsive_pipeline
    return _trace(pipe, prompt="Cardiomegaly", **common), _trace(pipe, prompt="Pneumothorax", **common)


def test_the_anatomy_stage_ignores_the_prompt_when_a_pathology_stage_follows(two_prompts):
    a, b = two_prompts
    for index in range(STEPS):
        assert torch.equal(a[("anatomy", index)], b[("anatomy", index)]), index


def test_the_pathology_stage_holds_its_known_region_at_every_step(responsive_pipeline, two_prompts, pathology):
    a, b = two_prompts
    inside = latent_region(pathology, responsive_pipeline.latent_shape()).bool()[:, 0]
    differs_inside = False
    for index in range(STEPS):
        za, zb = a[("pathology", index)], b[("pathology", index)]
        assert torch.equal(za.permute(1, 0, 2, 3)[:, ~inside], zb.permute(1, 0, 2, 3)[:, ~inside]), index
        differs_inside |= not torch.equal(za.permute(1, 0, 2, 3)[:, inside], zb.permute(1, 0, 2, 3)[:, inside])
    assert differs_inside  # the prompt does paint inside the mask
    assert not torch.equal(a["images"], b["images"])


@pytest.mark.parametrize("fraction", [0.5, 1.0])
def test_the_anatomy_stage_holds_the_organs_for_its_share_of_the_steps(responsive_pipeline, anatomy, fraction):
    pipe, common = responsive_pipeline, dict(anatomy=anatomy, anatomy_step_fraction=fraction, guidance_scale=7.0)
    a, b = _trace(pipe, prompt="Cardiomegaly", **common), _trace(pipe, prompt="Edema", **common)
    organs = latent_region(anatomy, pipe.latent_shape()).bool()[:, 0]
    held = round(fraction * STEPS)
    for index in range(STEPS):
        za, zb = (t[("anatomy", index)].permute(1, 0, 2, 3)[:, organs] for t in (a, b))
        assert torch.equal(za, zb) == (index < held or index == 0), index


def test_the_controlnet_baseline_is_its_own_pipeline_on_the_same_networks(tiny_pipeline, anatomy, pathology):
    baseline = ControlNetPipeline.from_pipeline(tiny_pipeline)
    assert baseline.unet is tiny_pipeline.unet and baseline.controlnet is tiny_pipeline.controlnet
    kwargs = dict(anatomy=anatomy, pathology=pathology, prompt="Edema", num_inference_steps=3, seed=1)
    stages = []
    images = baseline(callback=lambda stage, *_: stages.append(stage), **kwargs)
    assert set(stages) == {"controlnet"} and len(stages) == 3  # one pass, no known region stages
    assert torch.equal(images, tiny_pipeline(control="controlnet", **kwargs))
    assert not torch.equal(images, tiny_pipeline(**kwargs))
