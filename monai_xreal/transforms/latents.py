# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Encoding images with the frozen autoencoder once, so latent training caches latents instead of images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor
from torch import nn

__all__ = ["EncodeLatentd"]


class EncodeLatentd(MapTransform):
    """Add the frozen ``AutoencoderKL``'s posterior of an image, its mean and standard deviation, to the data.

    Deterministic, so a ``CacheDataset`` computes it once; the training batch then draws ``mu + sigma * eps``
    every iteration (see :class:`monai_xreal.engines.LatentDiffusionPrepareBatch`).

    Args:
        keys: the ``(1, H, W)`` image in [0, 1] (one key).
        autoencoder: the trained ``AutoencoderKL`` (frozen here); an autoencoder of 3 channels gets the grey image
            repeated, as at sampling.
        image_range: the values the autoencoder's images span, ``(low, high)`` (Stable Diffusion's: ``(-1, 1)``):
            the image is mapped there before encoding, as :class:`monai_xreal.pipeline.codec.LatentCodec` does.
        mu_key, sigma_key: where the ``(C, h, w)`` mean and standard deviation go (on the CPU).
        device: where the encoder runs (it is moved there; ``None``: where it is).
    """

    def __init__(
        self,
        keys: KeysCollection,
        autoencoder: nn.Module,
        mu_key: str = "latent_mu",
        sigma_key: str = "latent_sigma",
        device: torch.device | str | None = None,
        allow_missing_keys: bool = False,
        image_range: Sequence[float] = (0.0, 1.0),
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.low, self.high = (float(v) for v in image_range)
        if not self.high > self.low:
            raise ValueError(f"image_range must be (low, high) with high > low, got {tuple(image_range)}")
        if len(self.keys) != 1:
            raise ValueError(f"EncodeLatentd encodes one image key, got {self.keys}")
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        if device is not None:
            self.autoencoder.to(device)
        self.mu_key, self.sigma_key = mu_key, sigma_key
        self.device = device

    @torch.no_grad()
    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            device = self.device if self.device is not None else next(self.autoencoder.parameters()).device
            # plain tensors (no metadata): the latents are the same whether computed now or read from a disk cache
            image = convert_to_tensor(d[key], track_meta=False).float()[None].to(device)
            if image.shape[1] != 1:
                raise ValueError(f"EncodeLatentd encodes grey (1, H, W) images, got {tuple(image.shape[1:])}")
            image = image * (self.high - self.low) + self.low
            channels = self.autoencoder.encoder.in_channels
            z_mu, z_sigma = self.autoencoder.encode(image if channels == 1 else image.expand(-1, channels, -1, -1))
            d[self.mu_key], d[self.sigma_key] = z_mu[0].cpu(), z_sigma[0].cpu()
        return d
