# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from monai_xreal.control import (
    anatomy_keep_weights,
    blend_clean_prediction,
    blend_known_region,
    feathered_composite,
    latent_region,
    pathology_keep_weights,
    set_timesteps,
)


def test_blend_is_exact_where_kept_and_untouched_where_free():
    latents, known = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    keep = torch.zeros(2, 1, 8, 8)
    keep[:, :, :4] = 1.0
    keep[:, :, 4:6] = 0.2
    out = blend_known_region(latents, known, keep)
    assert torch.equal(out[:, :, :4], known[:, :, :4])
    assert torch.equal(out[:, :, 6:], latents[:, :, 6:])
    torch.testing.assert_close(out[:, :, 4:6], 0.2 * known[:, :, 4:6] + 0.8 * latents[:, :, 4:6])


def test_blend_at_t0_returns_the_known_latent_in_the_kept_region():
    scheduler = DDIMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-8, beta_end=0.02)
    latents, known, noise = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    keep = (torch.arange(8)[None, None, :, None] < 4).float().expand(1, 1, 8, 8)
    noised = scheduler.add_noise(known, noise, torch.tensor([0]))
    out = blend_known_region(latents, noised, keep)
    torch.testing.assert_close(out[:, :, :4], known[:, :, :4], atol=1e-3, rtol=0)
    assert torch.equal(out[:, :, 4:], latents[:, :, 4:])


def test_latent_region_keeps_cells_touched_by_any_inside_pixel():
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 5, 9] = 1  # one pixel
    region = latent_region(mask, (4, 4))
    assert region.shape == (1, 1, 4, 4)
    assert region.sum() == 1 and region[0, 0, 1, 2] == 1


def test_keep_weights_for_anatomy_and_pathology():
    anatomy = torch.zeros(1, 1, 8, 8)
    anatomy[..., :4, :] = 3  # heart label in the top half
    keep = anatomy_keep_weights(anatomy, (4, 4), soft_value=0.2)
    assert torch.equal(keep[..., :2, :], torch.ones(1, 1, 2, 4))
    torch.testing.assert_close(keep[..., 2:, :], torch.full((1, 1, 2, 4), 0.2))
    keep_p = pathology_keep_weights((anatomy > 0).float(), (4, 4))
    assert torch.equal(keep_p[..., :2, :], torch.zeros(1, 1, 2, 4))
    assert torch.equal(keep_p[..., 2:, :], torch.ones(1, 1, 2, 4))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_clean_prediction_blending_carries_the_known_regions_own_noise_to_the_known_latent(prediction_type):
    """The 'data' rule: free cells keep the model's prediction; in kept cells every DDIM (eta 0) step moves the sample
    along ``a_t known + s_t n`` with the same ``n`` (never fresh noise), ending on the known latent itself."""
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, prediction_type=prediction_type)
    set_timesteps(scheduler, 4, "cpu")  # the grid the step's previous-timestep rule assumes
    g = torch.Generator().manual_seed(0)
    known, latents = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    keep = torch.zeros(2, 1, 8, 8)
    keep[..., :4] = 1.0
    carried = []
    for t in scheduler.timesteps:
        alpha_bar = scheduler.alphas_cumprod[t]
        carried.append((latents[..., :4] - alpha_bar.sqrt() * known[..., :4]) / (1 - alpha_bar).sqrt())
        prediction = torch.randn(2, 3, 8, 8, generator=g)  # any model
        held = blend_clean_prediction(prediction, latents, known, keep, alpha_bar, prediction_type)
        assert torch.equal(held[..., 4:], prediction[..., 4:])
        latents = scheduler.step(held, int(t), latents, eta=0.0)[0]
    for noise in carried[1:]:
        torch.testing.assert_close(noise, carried[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(latents[..., :4], known[..., :4], atol=1e-4, rtol=1e-4)  # alpha_bar 1 at the end
    assert (latents[..., 4:] - known[..., 4:]).abs().max() > 0.1


def test_clean_prediction_blending_weighs_the_clean_estimates():
    latents, known, prediction = torch.randn(3, 1, 3, 4, 4).unbind()
    keep = torch.full((1, 1, 4, 4), 0.2)
    alpha_bar = torch.tensor(0.3)
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    held = blend_clean_prediction(prediction, latents, known, keep, alpha_bar, "epsilon")
    clean = (latents - s * prediction) / a
    torch.testing.assert_close((latents - s * held) / a, 0.2 * known + 0.8 * clean)
    with pytest.raises(ValueError, match="prediction type"):
        blend_clean_prediction(prediction, latents, known, keep, alpha_bar, "flow")


def test_feathered_composite_keeps_the_background_away_from_the_region():
    painted, background = torch.ones(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    region = torch.zeros(1, 1, 32, 32)
    region[..., 12:20, 12:20] = 1
    hard = feathered_composite(painted, background, region, 0.0)
    assert torch.equal(hard, region)
    soft = feathered_composite(painted, background, region, 1.5)
    assert torch.equal(soft[..., :4, :], background[..., :4, :])  # far from the region: the background exactly
    assert soft[..., 16, 16] > 0.97 and 0.3 < soft[..., 12, 16] < 0.7  # the finding inside, a ramp across the edge
    assert ((soft > 0) & (soft < 1)).sum() > ((hard > 0) & (hard < 1)).sum()
