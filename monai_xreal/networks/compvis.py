# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI networks laid out like CompVis latent diffusion's (and diffusers'), so that their weights load exactly."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.nets.autoencoderkl import Decoder
from monai.networks.nets.diffusion_model_unet import SpatialTransformer
from torch import nn

__all__ = ["CompVisAutoencoderKL", "CompVisDiffusionModelUNet"]


class _GroupNormSiLU(nn.GroupNorm):
    """GroupNorm followed by SiLU, with GroupNorm's parameter names (CompVis' ``norm_out`` then ``nonlinearity``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(super().forward(x))


def _norm_silu(norm: nn.GroupNorm) -> _GroupNormSiLU:
    return _GroupNormSiLU(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)


class CompVisAutoencoderKL(AutoencoderKL):
    """MONAI's ``AutoencoderKL`` with CompVis' KL-autoencoder layout (the first stage of latent diffusion, Stable
    Diffusion, Cheff and XReal), so their weights load exactly.

    It differs from ``AutoencoderKL`` in three places, each a fact of the CompVis network:

    - the encoder and the decoder apply SiLU between their last GroupNorm and their last convolution;
    - the decoder has ``num_res_blocks + 1`` residual blocks per level;
    - the encoder emits ``2 * latent_channels`` channels and both 1x1 quantisation convolutions read all of them
      (CompVis' single ``quant_conv`` split into its mean and log-variance rows).

    Everything else, ``encode`` (``(B, C, H, W)`` to mean and sigma ``(B, latent_channels, H/f, W/f)``), ``decode``
    and the state-dict names, is ``AutoencoderKL``'s. Arguments are ``AutoencoderKL``'s; both non-local attentions are
    always on, as in CompVis.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 3,
        num_res_blocks: int = 2,
        channels: Sequence[int] = (128, 256, 512, 512),
        attention_levels: Sequence[bool] | None = None,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        use_flash_attention: bool = False,
    ) -> None:
        attention_levels = tuple(attention_levels or (False,) * len(channels))
        super().__init__(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
            num_res_blocks=num_res_blocks, channels=channels, attention_levels=attention_levels,
            latent_channels=latent_channels, norm_num_groups=norm_num_groups, norm_eps=norm_eps,
            with_encoder_nonlocal_attn=True, with_decoder_nonlocal_attn=True, use_flash_attention=use_flash_attention,
        )  # fmt: skip
        self.decoder = Decoder(
            spatial_dims=spatial_dims, channels=channels, in_channels=latent_channels, out_channels=out_channels,
            num_res_blocks=(num_res_blocks + 1,) * len(channels), norm_num_groups=norm_num_groups, norm_eps=norm_eps,
            attention_levels=attention_levels, with_nonlocal_attn=True, use_flash_attention=use_flash_attention,
        )  # fmt: skip
        self.encoder.blocks[-1] = Convolution(
            spatial_dims, channels[-1], 2 * latent_channels, strides=1, kernel_size=3, padding=1, conv_only=True
        )
        for name in ("quant_conv_mu", "quant_conv_log_sigma"):
            quant = Convolution(
                spatial_dims, 2 * latent_channels, latent_channels, strides=1, kernel_size=1, padding=0, conv_only=True
            )
            setattr(self, name, quant)
        self.encoder.blocks[-2] = _norm_silu(self.encoder.blocks[-2])
        self.decoder.blocks[-2] = _norm_silu(self.decoder.blocks[-2])


class CompVisDiffusionModelUNet(DiffusionModelUNet):
    """MONAI's ``DiffusionModelUNet`` with CompVis' normalisation constants: GroupNorm eps ``norm_eps`` (1e-5) in
    the residual blocks and the output, 1e-6 in the spatial transformers' input norm (MONAI uses one eps for all).

    Same arguments, inputs and outputs as ``DiffusionModelUNet``; the eps is not in the state dict, so the network
    must be built as this class for CompVis / diffusers weights to give the original's outputs.
    """

    transformer_norm_eps = 1e-6

    def __init__(self, *args, norm_eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, norm_eps=norm_eps, **kwargs)
        for module in self.modules():
            if isinstance(module, SpatialTransformer):
                module.norm.eps = self.transformer_norm_eps
