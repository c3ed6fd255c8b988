# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import pytest
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler

from monai_xreal import XRealInputError, XRealPipeline
from monai_xreal.control import anatomy_keep_weights
from monai_xreal.text import HFTextEncoder

STEPS = 4


def test_from_bundle_exposes_the_parts(tiny_pipeline):
    pipe = tiny_pipeline
    assert isinstance(pipe.autoencoder, AutoencoderKL) and isinstance(pipe.anatomy_controller, AutoencoderKL)
    assert isinstance(pipe.unet, DiffusionModelUNet) and isinstance(pipe.text_encoder, HFTextEncoder)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.spatial_shape == (32, 32)
    assert pipe.anatomy_labels == {0: "background", 1: "right lung", 2: "left lung", 3: "heart", 4: "upper mediastinum"}
    assert not any(p.requires_grad for p in pipe.unet.parameters())


def test_output_is_a_batch_of_images_in_unit_range(tiny_pipeline, anatomy, pathology):
    images = tiny_pipeline(
        anatomy=anatomy, pathology=pathology, prompt="Cardiomegaly", num_inference_steps=STEPS, seed=1
    )
    assert images.shape == (1, 1, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


def test_same_seed_same_images_different_seeds_differ(tiny_pipeline, anatomy, pathology):
    kwargs = dict(anatomy=anatomy, pathology=pathology, prompt="Edema", num_inference_steps=STEPS)
    a, b, c = tiny_pipeline(seed=7, **kwargs), tiny_pipeline(seed=7, **kwargs), tiny_pipeline(seed=8, **kwargs)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_of_four_equals_four_single_calls(tiny_pipeline, anatomy, pathology):
    seeds = [3, 11, 5, 42]
    prompts = ["Cardiomegaly", "Edema", "Pneumothorax", "Cardiomegaly"]
    batched = tiny_pipeline(
        anatomy=anatomy.expand(4, -1, -1, -1), pathology=pathology.expand(4, -1, -1, -1), prompt=prompts,
        num_inference_steps=STEPS, seed=seeds,
    )  # fmt: skip
    singles = torch.cat(
        [
            tiny_pipeline(anatomy=anatomy, pathology=pathology, prompt=p, num_inference_steps=STEPS, seed=s)
            for p, s in zip(prompts, seeds)
        ]
    )
    torch.testing.assert_close(batched, singles, atol=1e-4, rtol=0)
    # an int seed means seed, seed + 1, ...
    torch.testing.assert_close(
        tiny_pipeline(anatomy=anatomy.expand(2, -1, -1, -1), prompt="", num_inference_steps=STEPS, seed=3)[1:],
        tiny_pipeline(anatomy=anatomy, prompt="", num_inference_steps=STEPS, seed=4), atol=1e-4, rtol=0,
    )  # fmt: skip


def test_anatomy_stage_holds_the_controller_latent_in_organs(tiny_pipeline, anatomy):
    """During the blended steps the organ cells are exactly the controller's latent noised to t."""
    pipe, seed, steps = tiny_pipeline, 5, 10
    expected_latent = pipe.encode(pipe.anatomy_image(anatomy), [torch.Generator().manual_seed(seed)])
    organs = anatomy_keep_weights(anatomy, (16, 16), 0.0).bool().expand_as(expected_latent)
    seen = {}

    def record(stage, index, t, latents):
        seen[index] = (int(t), latents.clone())

    pipe(anatomy=anatomy, num_inference_steps=steps, anatomy_step_fraction=0.5, seed=seed, callback=record)
    alphas = pipe.scheduler.alphas_cumprod
    for index, (t, latents) in seen.items():
        residual = (latents - alphas[t].sqrt() * expected_latent) / (1 - alphas[t]).sqrt()
        inside, outside = residual[organs], residual[~organs]
        if index < steps // 2:  # blended: the residual is the fresh unit-variance noise
            assert inside.abs().max() < 6 and 0.7 < inside.std() < 1.3, index
        else:
            assert inside.std() > 1.3 or inside.std() < 0.7 or outside.std() > 1.3 or outside.std() < 0.7, index


def test_text_embeddings_are_computed_once_per_prompt(tiny_bundle, anatomy):
    pipe = XRealPipeline.from_bundle(tiny_bundle, device="cpu")
    calls = []
    encoder_forward = pipe.text_encoder.forward
    pipe.text_encoder.forward = lambda prompts: calls.append(list(prompts)) or encoder_forward(prompts)
    batch = anatomy.expand(4, -1, -1, -1)
    pipe(anatomy=batch, prompt=["Edema", "Edema", "Effusion", ""], num_inference_steps=2, seed=0)
    pipe(anatomy=batch, prompt=["Edema", "Effusion", "Edema", ""], num_inference_steps=2, seed=0)
    assert sorted(p for call in calls for p in call) == ["", "Edema", "Effusion"]


def test_generation_without_anatomy_or_pathology(tiny_pipeline, pathology):
    text_only = tiny_pipeline(prompt=["Cardiomegaly", ""], num_inference_steps=STEPS, seed=0)
    assert text_only.shape == (2, 1, 32, 32)
    painted = tiny_pipeline(pathology=pathology, prompt="Edema", num_inference_steps=STEPS, seed=0)
    assert painted.shape == (1, 1, 32, 32)


def test_boxes_and_the_equivalent_mask_give_the_same_images(tiny_pipeline, anatomy):
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:12, 16:24] = 1
    kwargs = dict(anatomy=anatomy, prompt="Effusion", num_inference_steps=STEPS, seed=2)
    from_boxes = tiny_pipeline(pathology=[torch.tensor([[4, 16, 12, 24]])], **kwargs)
    assert torch.equal(from_boxes, tiny_pipeline(pathology=mask, **kwargs))


def test_masks_of_other_sizes_are_resized(tiny_pipeline, anatomy, pathology):
    big_anatomy = torch.nn.functional.interpolate(anatomy, size=(128, 128), mode="nearest")
    big_pathology = torch.nn.functional.interpolate(pathology, size=(128, 128), mode="nearest")
    images = tiny_pipeline(anatomy=big_anatomy[0, 0], pathology=big_pathology, prompt="Edema", num_inference_steps=2)
    assert images.shape == (1, 1, 32, 32)


@pytest.mark.parametrize("scheduler", ["ddpm", "pndm", "ddim"])
def test_schedulers_are_selectable(tiny_pipeline, anatomy, pathology, scheduler):
    images = tiny_pipeline(
        anatomy=anatomy, pathology=pathology, prompt="Edema", num_inference_steps=5, scheduler=scheduler, seed=0
    )
    assert images.shape == (1, 1, 32, 32) and torch.isfinite(images).all()
    assert isinstance(tiny_pipeline.scheduler, DDIMScheduler)  # the bundle's scheduler is left as it was


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(anatomy=torch.zeros(2, 2, 32, 32)), "anatomy"),
        (dict(anatomy=torch.zeros(1, 1, 8, 8, 8)), "anatomy"),
        (dict(anatomy=torch.full((1, 1, 32, 32), 1.5)), "anatomy"),
        (dict(anatomy=torch.full((1, 1, 32, 32), 7.0)), "anatomy"),
        (dict(anatomy=torch.full((1, 1, 32, 32), float("nan"))), "anatomy"),
        (dict(pathology=torch.zeros(1, 1, 32, 32), prompt="Edema"), "pathology"),
        (dict(pathology=torch.full((1, 1, 32, 32), float("nan"))), "pathology"),
        (dict(anatomy=torch.zeros(2, 1, 32, 32), prompt=["a", "b", "c"]), "prompt"),
        (dict(anatomy=torch.zeros(2, 1, 32, 32), seed=[1]), "seed"),
        (dict(prompt="x", num_inference_steps=0), "num_inference_steps"),
        (dict(prompt="x", anatomy_soft_value=1.5), "anatomy_soft_value"),
        (dict(prompt="x", scheduler="euler"), "scheduler"),
        (dict(pathology=[torch.tensor([[5, 5, 2, 2]])], prompt="x"), "pathology"),
    ],
)
def test_bad_input_names_the_argument(tiny_pipeline, kwargs, argument):
    with pytest.raises(XRealInputError) as err:
        tiny_pipeline(num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)
    assert err.value.argument == argument
    assert "\n" not in str(err.value)


def test_bundle_without_weights_is_an_error(tiny_bundle, tmp_path):
    import shutil

    broken = tmp_path / "no_weights"
    shutil.copytree(tiny_bundle, broken)
    (broken / "models" / "model_autoencoder.pt").unlink()
    with pytest.raises(XRealInputError, match="model_autoencoder.pt"):
        XRealPipeline.from_bundle(broken)
    with pytest.raises(XRealInputError, match="inference.json"):
        XRealPipeline.from_bundle(tmp_path / "nowhere")


def test_knobs_left_unset_take_the_bundles_sampling_defaults(tiny_pipeline, anatomy):
    from monai_xreal.pipeline import XREAL_SAMPLING

    assert tiny_pipeline.sampling_defaults["anatomy_step_fraction"] == 0.7  # the shipped bundle's tuned value
    assert set(tiny_pipeline.sampling_defaults) == set(XREAL_SAMPLING)
    steps, original = [], dict(tiny_pipeline.sampling_defaults)
    tiny_pipeline.sampling_defaults["num_inference_steps"] = 3
    try:
        tiny_pipeline(anatomy, seed=0, callback=lambda stage, i, t, z: steps.append(i))
        assert steps == [0, 1, 2]
        explicit = tiny_pipeline(anatomy, seed=0, anatomy_step_fraction=0.7, num_inference_steps=3)
        implicit = tiny_pipeline(anatomy, seed=0)
        torch.testing.assert_close(explicit, implicit)
    finally:
        tiny_pipeline.sampling_defaults = original
    with pytest.raises(XRealInputError, match="sampling_defaults"):
        XRealPipeline(
            tiny_pipeline.autoencoder, tiny_pipeline.unet, tiny_pipeline.text_encoder, tiny_pipeline.scheduler,
            sampling_defaults={"steps": 10},
        )  # fmt: skip


def test_latents_keep_the_unets_precision_under_autocast(tiny_pipeline, monkeypatch):
    """A text encoder may return bf16 embeddings under bfloat16 autocast (e.g. CLIP's final LayerNorm on CPU); the
    latents, and so the scheduler's updates, stay in the weights' fp32 all the same, as diffusers keeps them."""
    encode = tiny_pipeline.encode_prompts
    monkeypatch.setattr(tiny_pipeline, "encode_prompts", lambda prompts: encode(prompts).to(torch.bfloat16))
    dtypes = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tiny_pipeline(prompt="Pleural Effusion", num_inference_steps=2, seed=0,
                      callback=lambda stage, i, t, z: dtypes.append(z.dtype))  # text to image: no known region  # fmt: skip
    assert len(dtypes) == 2 and set(dtypes) == {torch.float32}
