# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Known-region blending in latent space: the mechanism behind both of XReal's controllers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["anatomy_keep_weights", "blend_known_region", "latent_region", "pathology_keep_weights"]


def latent_region(mask: torch.Tensor, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """Which latent cells a pixel mask touches.

    Args:
        mask: ``(B, 1, H, W)`` mask or label map; any value > 0 counts as inside.
        latent_shape: the latent grid's spatial shape ``(h, w)``.

    Returns:
        ``(B, 1, h, w)`` float tensor, 1.0 where any inside pixel falls in the cell, else 0.0.
    """
    inside = (mask > 0).float()
    # area averaging followed by "> 0" keeps every cell that holds any inside pixel, so thin structures
    # survive the downsampling (XReal gets a similar slight dilation from bicubic resizing).
    return (F.interpolate(inside, size=tuple(latent_shape), mode="area") > 0).float()


def anatomy_keep_weights(anatomy: torch.Tensor, latent_shape: tuple[int, ...], soft_value: float) -> torch.Tensor:
    """Blending weights for the anatomy stage: 1 inside organs, ``soft_value`` elsewhere.

    Args:
        anatomy: ``(B, 1, H, W)`` integer label map, 0 is background.
        latent_shape: the latent grid's spatial shape.
        soft_value: weight in [0, 1] given to the controller's latent outside the organs (XReal: 0.2).

    Returns:
        ``(B, 1, h, w)`` float tensor in [soft_value, 1].
    """
    organs = latent_region(anatomy, latent_shape)
    return organs + (1.0 - organs) * soft_value


def pathology_keep_weights(pathology: torch.Tensor, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """Blending weights for the pathology stage: keep everything outside the pathology region.

    Args:
        pathology: ``(B, 1, H, W)`` binary mask, 1 where the finding is to be painted.
        latent_shape: the latent grid's spatial shape.

    Returns:
        ``(B, 1, h, w)`` float tensor, 0 inside the pathology region, 1 outside.
    """
    return 1.0 - latent_region(pathology, latent_shape)


def blend_known_region(latents: torch.Tensor, known_noised: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Replace the known region of the current latent with the known latent noised to the same timestep.

    ``keep * known_noised + (1 - keep) * latents``: exact copy of ``known_noised`` where ``keep == 1``,
    ``latents`` untouched where ``keep == 0``.

    Args:
        latents: ``(B, C, h, w)`` current sample of the reverse process.
        known_noised: ``(B, C, h, w)`` the known latent passed through the scheduler's ``add_noise`` at the
            current timestep.
        keep: ``(B, 1, h, w)`` weights in [0, 1].
    """
    return keep * known_noised + (1.0 - keep) * latents
