# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""diffusers-format UNet and autoencoder into MONAI networks, proved exact against diffusers' own networks."""

from __future__ import annotations

import diffusers
import pytest
import torch
from conftest import autoencoder_differences, randomise_weights

from monai_xreal.errors import XRealInputError
from monai_xreal.interop import load_exactly
from monai_xreal.interop.diffusers import (
    diffusers_autoencoder_arguments,
    diffusers_autoencoder_to_monai,
    diffusers_unet_arguments,
    diffusers_unet_to_monai,
)
from monai_xreal.networks import CompVisAutoencoderKL, CompVisDiffusionModelUNet

TOLERANCE = 1e-5


@pytest.mark.parametrize("linear_projection", [False, True])  # Stable Diffusion 1.x and 2.x transformers
def test_diffusers_unet_is_exact(linear_projection):
    reference = randomise_weights(diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=(2, 4, 4), norm_num_groups=32,
        use_linear_projection=linear_projection,
    ))  # fmt: skip
    arguments = diffusers_unet_arguments(reference.config)
    assert arguments["num_head_channels"] == [16, 16, 16]  # diffusers' attention_head_dim counts heads
    converted = CompVisDiffusionModelUNet(**arguments).eval()
    load_exactly(converted, diffusers_unet_to_monai(reference.state_dict()), "diffusers UNet")
    x, t, context = torch.randn(2, 4, 16, 16), torch.tensor([3, 900]), torch.randn(2, 5, 24)
    with torch.no_grad():
        difference = converted(x, t, context=context) - reference(x, t, encoder_hidden_states=context).sample
    assert difference.abs().max() < TOLERANCE


def test_diffusers_unet_features_without_a_monai_equivalent_are_refused():
    config = {"block_out_channels": [32], "down_block_types": ["CrossAttnDownBlock2D"], "in_channels": 4,
              "out_channels": 4, "layers_per_block": 1, "cross_attention_dim": 8,
              "class_embed_type": "timestep"}  # fmt: skip
    with pytest.raises(XRealInputError, match="class_embed_type"):
        diffusers_unet_arguments(config)
    with pytest.raises(XRealInputError, match="add_embedding.linear_1.weight"):
        diffusers_unet_to_monai({"add_embedding.linear_1.weight": torch.zeros(1)})


def test_diffusers_autoencoder_is_exact():
    reference = randomise_weights(diffusers.AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(32, 32, 64), layers_per_block=1,
        latent_channels=4, norm_num_groups=32,
    ))  # fmt: skip
    arguments = diffusers_autoencoder_arguments(reference.config)
    converted = CompVisAutoencoderKL(**arguments).eval()
    state = diffusers_autoencoder_to_monai(
        reference.state_dict(), len(arguments["channels"]), arguments["num_res_blocks"]
    )
    load_exactly(converted, state, "diffusers VAE")
    x, z = torch.rand(2, 1, 32, 32), torch.randn(2, 4, 8, 8)
    assert max(autoencoder_differences(converted, reference, x, z)) < TOLERANCE  # mean, sigma, decoding
