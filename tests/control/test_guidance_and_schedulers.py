# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import pytest
import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler

from monai_xreal.control import guided_prediction, make_scheduler, scheduler_step, set_timesteps


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return DiffusionModelUNet(
        spatial_dims=2, in_channels=3, out_channels=3, channels=(16, 32), attention_levels=(False, True),
        num_res_blocks=1, num_head_channels=(0, 16), norm_num_groups=8, with_conditioning=True,
        cross_attention_dim=12,
    ).eval()  # fmt: skip


def xreal_ddim():
    return DDIMScheduler(
        num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0295,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip


@torch.no_grad()
def test_guidance_scale_one_is_the_conditional_prediction(unet):
    z, t = torch.randn(2, 3, 8, 8), torch.tensor(500)
    cond, uncond = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    expected = unet(z, t.expand(2), context=cond)
    torch.testing.assert_close(guided_prediction(unet, z, t, cond, uncond, 1.0), expected)
    torch.testing.assert_close(guided_prediction(unet, z, t, cond, None, 7.0), expected)


@torch.no_grad()
def test_batched_guidance_equals_two_separate_calls(unet):
    z, t = torch.randn(2, 3, 8, 8), torch.tensor(321)
    cond, uncond = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    c = unet(z, t.expand(2), context=cond)
    u = unet(z, t.expand(2), context=uncond)
    torch.testing.assert_close(
        guided_prediction(unet, z, t, cond, uncond, 7.0), u + 7.0 * (c - u), atol=1e-5, rtol=1e-5
    )


def test_leading_timesteps_match_xreal_and_end_on_alpha_bar_0():
    scheduler = xreal_ddim()
    steps = set_timesteps(scheduler, 100, "cpu")
    assert steps[0] == 991 and steps[-1] == 1 and torch.all(steps[:-1] - steps[1:] == 10)
    assert torch.equal(scheduler.final_alpha_cumprod, scheduler.alphas_cumprod[0])
    own = set_timesteps(xreal_ddim(), 100, "cpu", spacing="scheduler")
    assert own[0] == 999  # MONAI's own grid differs, which is why "leading" exists
    with pytest.raises(ValueError, match="spacing"):
        set_timesteps(scheduler, 10, "cpu", spacing="trailing")


@pytest.mark.parametrize("name,cls", [("ddim", DDIMScheduler), ("ddpm", DDPMScheduler), ("pndm", PNDMScheduler)])
def test_make_scheduler_keeps_the_trained_noise_levels(name, cls):
    like = xreal_ddim()
    made = make_scheduler(name, like)
    assert isinstance(made, cls)
    torch.testing.assert_close(made.alphas_cumprod, like.alphas_cumprod)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("euler", like)


def test_noisy_steps_draw_from_each_samples_own_generator():
    scheduler = xreal_ddim()
    set_timesteps(scheduler, 10, "cpu")
    t = scheduler.timesteps[3]
    out, z = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    batched = scheduler_step(scheduler, out, t, z, [torch.Generator().manual_seed(s) for s in (1, 2, 3)], eta=1.0)
    single = scheduler_step(scheduler, out[1:2], t, z[1:2], [torch.Generator().manual_seed(2)], eta=1.0)
    torch.testing.assert_close(batched[1:2], single)
    deterministic = scheduler_step(scheduler, out, t, z, [torch.Generator()] * 3, eta=0.0)
    assert not torch.allclose(deterministic, batched)
