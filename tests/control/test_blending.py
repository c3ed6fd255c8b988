# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import torch
from monai.networks.schedulers import DDIMScheduler

from monai_xreal.control import anatomy_keep_weights, blend_known_region, latent_region, pathology_keep_weights


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
