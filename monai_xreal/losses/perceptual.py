# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A perceptual loss whose feature network is a local TorchScript file: never a download."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from monai_xreal.errors import XRealInputError

__all__ = ["LocalPerceptualLoss"]


class LocalPerceptualLoss(nn.Module):
    """LPIPS-style distance on the features of a frozen network loaded from a local TorchScript file.

    MONAI's ``PerceptualLoss`` fetches its networks through ``torch.hub`` / ``lpips`` / torchvision at run time;
    training here must work offline, so the feature network is whatever the user exported with
    ``torch.jit.save`` (e.g. a RadImageNet or ImageNet backbone truncated to its feature layers). It takes
    ``(B, in_channels, H, W)`` and returns one feature map or a list/tuple of them. The loss is the mean over
    layers of the squared difference of channel-normalised features, averaged over positions.

    Args:
        weights_path: the TorchScript file.
        in_channels: channels the network expects; grey images are repeated to match.
        mean, std: per-channel input normalisation applied to images in [0, 1] (ImageNet's by default).
    """

    def __init__(
        self,
        weights_path: str | Path,
        in_channels: int = 3,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise XRealInputError("perceptual_weights", f"missing file {path} (a local TorchScript feature network)")
        try:
            self.features = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as err:
            raise XRealInputError("perceptual_weights", f"{path} is not a TorchScript file: {err}") from err
        for parameter in self.features.parameters():  # ScriptModules have no requires_grad_()
            parameter.requires_grad_(False)
        self.in_channels = in_channels
        self.register_buffer("mean", torch.tensor(mean[:in_channels]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std[:in_channels]).view(1, -1, 1, 1))

    def train(self, mode: bool = True) -> LocalPerceptualLoss:
        super().train(mode)
        self.features.eval()  # the feature network's statistics stay frozen
        return self

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss between ``(B, C, H, W)`` images in [0, 1]."""
        losses = [
            (_unit(a) - _unit(b)).pow(2).sum(dim=1).mean() for a, b in zip(self._layers(input), self._layers(target))
        ]
        return torch.stack(losses).mean()

    def _layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        if images.shape[1] != self.in_channels:
            images = images.expand(-1, self.in_channels, -1, -1)
        features = self.features((images.float() - self.mean) / self.std)
        return list(features) if isinstance(features, (list, tuple)) else [features]


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
