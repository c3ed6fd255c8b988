# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""ControlNet control: the baseline XReal compares against, as an alternative to its two controllers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ControlledUNet", "controlnet_condition"]


def controlnet_condition(anatomy: torch.Tensor | None, pathology: torch.Tensor | None, max_label: int) -> torch.Tensor:
    """The ControlNet's input: one channel per anatomy label (background dropped) and the pathology mask.

    Args:
        anatomy: ``(B, 1, H, W)`` integer label map with values in ``0..max_label``, or ``None`` (all zeros).
        pathology: ``(B, 1, H, W)`` binary mask, or ``None`` (all zeros).
        max_label: the largest anatomy label.

    Returns:
        ``(B, max_label + 1, H, W)`` float in {0, 1}: channels ``0..max_label-1`` are labels ``1..max_label``,
        the last is the pathology mask.
    """
    reference = anatomy if anatomy is not None else pathology
    if reference is None:
        raise ValueError("controlnet_condition needs an anatomy label map or a pathology mask")
    batch, _, *spatial = reference.shape
    if anatomy is None:
        organs = reference.new_zeros((batch, max_label, *spatial), dtype=torch.float32)
    else:
        labels = anatomy[:, 0].round().long().clamp(0, max_label)
        organs = F.one_hot(labels, max_label + 1).movedim(-1, 1)[:, 1:].float()
    if pathology is None:
        lesion = organs.new_zeros((batch, 1, *spatial))
    else:
        lesion = (pathology > 0).float()
    return torch.cat([organs, lesion], dim=1)


class ControlledUNet(nn.Module):
    """A frozen ``DiffusionModelUNet`` steered by a MONAI ``ControlNet`` with a fixed condition.

    Behaves like the UNet (``forward(x, timesteps, context)``), so the sampling loop and classifier-free guidance
    use it unchanged: when guidance doubles the batch, the condition is repeated to match.

    Args:
        unet: the diffusion UNet.
        controlnet: the ControlNet trained over it.
        condition: ``(B, C, H, W)`` from :func:`controlnet_condition`.
        conditioning_scale: weight of the ControlNet's residuals.
    """

    def __init__(
        self, unet: nn.Module, controlnet: nn.Module, condition: torch.Tensor, conditioning_scale: float = 1.0
    ):
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet
        self.condition = condition
        self.conditioning_scale = conditioning_scale

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        condition = self.condition.to(dtype=x.dtype)
        if x.shape[0] != condition.shape[0]:
            condition = condition.repeat(x.shape[0] // condition.shape[0], 1, 1, 1)
        down, mid = self.controlnet(
            x, timesteps, controlnet_cond=condition, conditioning_scale=self.conditioning_scale, context=context
        )
        return self.unet(
            x, timesteps, context=context, down_block_additional_residuals=down, mid_block_additional_residual=mid
        )
