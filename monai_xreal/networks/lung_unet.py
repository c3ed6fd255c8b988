# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A U-Net with a VGG-11 encoder, in the layout of cheXwhatsApp's lung segmenter (trained on real chest X-rays), so
that its weights load by name (:mod:`monai_xreal.interop.chexwhatsapp` reads them out of the published pickle)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DoubleConv", "VGG11UNet"]


class DoubleConv(nn.Module):
    """Two 3x3 convolutions (``in -> mid -> out`` channels), each followed by batch norm (optional) and ReLU."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(mid_channels) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class VGG11UNet(nn.Module):
    """U-Net whose encoder is VGG-11's eight convolutions, with a 1x1 convolution that turns the grey input into
    VGG's three channels, a :class:`DoubleConv` bottleneck and five :class:`DoubleConv` decoder stages fed by
    upsampled features concatenated with the encoder's.

    Args:
        in_channels: input channels (1 for a grey radiograph).
        out_channels: classes (logits).
        batch_norm: batch norm in the bottleneck and decoder.
        upscale_mode: ``F.interpolate`` mode of the decoder's upsampling.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` logits, ``H`` and ``W`` multiples of 32. The
    cheXwhatsApp weights expect ``H = W = 512``, rows top to bottom, and intensities in ``[-0.5, 0.5]`` (an 8-bit
    grey image / 255 - 0.5).
    """

    _ENCODER = (("conv1", 64), ("conv2", 128), ("conv3", 256), ("conv3s", 256), ("conv4", 512), ("conv4s", 512),
                ("conv5", 512), ("conv5s", 512))  # fmt: skip

    def __init__(
        self, in_channels: int = 1, out_channels: int = 2, batch_norm: bool = True, upscale_mode: str = "bilinear"
    ) -> None:
        super().__init__()
        self.upscale_mode = upscale_mode
        self.init_conv = nn.Conv2d(in_channels, 3, kernel_size=1)
        previous = 3
        for name, channels in self._ENCODER:
            setattr(self, name, nn.Conv2d(previous, channels, kernel_size=3, padding=1))
            previous = channels
        self.center = DoubleConv(512, 512, 256, batch_norm)
        self.dec5 = DoubleConv(512 + 256, 512, 256, batch_norm)
        self.dec4 = DoubleConv(512 + 256, 512, 128, batch_norm)
        self.dec3 = DoubleConv(256 + 128, 256, 64, batch_norm)
        self.dec2 = DoubleConv(128 + 64, 128, 32, batch_norm)
        self.dec1 = DoubleConv(64 + 32, 64, 32, batch_norm)
        self.out = nn.Conv2d(32, out_channels, kernel_size=1)

    def _up(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.interpolate(x, size=skip.shape[-2:], mode=self.upscale_mode), skip], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.init_conv(x))
        enc1 = F.relu(self.conv1(x))
        enc2 = F.relu(self.conv2(F.max_pool2d(enc1, 2)))
        enc3 = F.relu(self.conv3s(F.relu(self.conv3(F.max_pool2d(enc2, 2)))))
        enc4 = F.relu(self.conv4s(F.relu(self.conv4(F.max_pool2d(enc3, 2)))))
        enc5 = F.relu(self.conv5s(F.relu(self.conv5(F.max_pool2d(enc4, 2)))))
        center = self.center(F.max_pool2d(enc5, 2))
        dec5 = self.dec5(self._up(center, enc5))
        dec4 = self.dec4(self._up(dec5, enc4))
        dec3 = self.dec3(self._up(dec4, enc3))
        dec2 = self.dec2(self._up(dec3, enc2))
        dec1 = self.dec1(self._up(dec2, enc1))
        return self.out(dec1)
