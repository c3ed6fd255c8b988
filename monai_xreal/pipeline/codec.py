# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The latent codec: images in [0, 1] to the scaled latents a diffusion UNet samples in, and back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_xreal.control import per_sample_randn
from monai_xreal.errors import XRealInputError

__all__ = ["LatentCodec", "to_channels", "to_gray"]


class LatentCodec:
    """Encode and decode through a latent diffusion model's ``AutoencoderKL``.

    Images are grey ``(B, 1, H, W)`` floats in [0, 1]; the autoencoder may take 3 identical channels (XReal, Cheff)
    and another value range (Stable Diffusion: [-1, 1]): both are handled here and nowhere else. Latents are the
    autoencoder's latents times ``scale_factor`` (unit variance, as the UNet was trained on).

    Args:
        autoencoder: the LDM's frozen ``AutoencoderKL``.
        scale_factor: the latent scale factor the UNet was trained with.
        image_range: the values the autoencoder's images span, ``(low, high)``.
    """

    def __init__(self, autoencoder: nn.Module, scale_factor: float = 1.0, image_range: Sequence[float] = (0.0, 1.0)):
        low, high = (float(v) for v in image_range)
        if not high > low:
            raise XRealInputError("image_range", f"must be (low, high) with high > low, got {tuple(image_range)}")
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.image_range = (low, high)

    @property
    def downsampling(self) -> int:
        """How many image pixels one latent cell spans along each axis (``AutoencoderKL`` halves the grid at every
        level but the last)."""
        return 2 ** (len(self.autoencoder.encoder.channels) - 1)

    def latent_shape(self, spatial_shape: Sequence[int]) -> tuple[int, int]:
        """The latent grid ``(h, w)`` of images of ``spatial_shape``."""
        return tuple(int(s) // self.downsampling for s in spatial_shape)

    def encode(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Scaled latent sample ``(B, C, h, w)`` of images ``(B, 1, H, W)`` in [0, 1]; the posterior's noise is
        drawn from ``generators`` (one per sample)."""
        low, high = self.image_range
        images = images * (high - low) + low
        z_mu, z_sigma = self.autoencoder.encode(to_channels(images, self.autoencoder.encoder.in_channels))
        noise = per_sample_randn(z_mu.shape[1:], generators, z_mu.device, z_mu.dtype)
        return (z_mu + z_sigma * noise) * self.scale_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 1, H, W)`` in [0, 1] from scaled latents ``(B, C, h, w)``."""
        low, high = self.image_range
        images = (self.autoencoder.decode(latents / self.scale_factor) - low) / (high - low)
        return to_gray(images.clamp(0, 1))


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey ``(B, 1, H, W)`` to a network's channel count (XReal's autoencoders take 3 identical channels)."""
    return images if images.shape[1] == channels else images.expand(-1, channels, -1, -1)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` to ``(B, 1, H, W)`` by the channel mean."""
    return images if images.shape[1] == 1 else images.mean(dim=1, keepdim=True)
