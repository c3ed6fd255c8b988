# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Known-region blending in latent space: the mechanism behind both of XReal's controllers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "BLENDING_RULES",
    "anatomy_keep_weights",
    "blend_clean_prediction",
    "feather_inside",
    "blend_known_region",
    "feathered_composite",
    "latent_region",
    "pathology_keep_weights",
]

BLENDING_RULES = ("noise", "data")
"""How a known region is held while sampling: ``"noise"`` (XReal: paste the known latent, noised afresh, into the
sample before each step, :func:`blend_known_region`) or ``"data"`` (replace the model's estimate of the clean latent
in the region and step the solver with it, :func:`blend_clean_prediction`)."""


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


def blend_clean_prediction(
    prediction: torch.Tensor,
    latents: torch.Tensor,
    known: torch.Tensor,
    keep: torch.Tensor,
    alpha_bar: torch.Tensor | float,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """Hold a known region through the model's prediction, consistently with the solver's state.

    With ``x_t = a x_0 + s e`` (``a = sqrt(alpha_bar)``, ``s = sqrt(1 - alpha_bar)``), the prediction is turned into
    the clean estimate ``x_0``, the known latent replaces it where ``keep`` is 1 (``keep * known + (1 - keep) *
    x_0``), and the noise is re-derived from the current sample, ``e = (x_t - a x_0) / s``; the pair is returned as
    the same kind of prediction. A deterministic DDIM step then moves the known region along its own noise path:
    ``x_t-1 = a' known + s' e`` with the very noise ``x_t`` holds, so after the last step it equals ``known``
    exactly and is never re-noised with fresh noise between steps. This is what keeps control at a few steps,
    where XReal's rule (:func:`blend_known_region`) leaves the region noisy and the seam unharmonised; it is
    DDNM's range/null-space split for inpainting, in latent space. Multistep solvers see consistent history.

    Args:
        prediction: ``(B, C, h, w)`` the (guided) model output at timestep ``t``.
        latents: ``(B, C, h, w)`` the sample ``x_t`` the prediction was made on.
        known: ``(B, C, h, w)`` the clean known latent.
        keep: ``(B, 1, h, w)`` weights in [0, 1].
        alpha_bar: the scheduler's ``alphas_cumprod[t]``.
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``, as the scheduler's.

    Returns:
        ``(B, C, h, w)`` the prediction with the known region held.
    """
    alpha_bar = torch.as_tensor(alpha_bar, dtype=latents.dtype, device=latents.device)
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    # the prediction of a fully known cell: clean latent ``known``, noise ``(x_t - a known) / s``; every quantity is
    # affine in ``keep``, so a weighted cell lies between it and the model's (free cells untouched, bit for bit)
    if prediction_type == "epsilon":
        held = (latents - a * known) / s
    elif prediction_type == "v_prediction":
        held = a * (latents - a * known) / s - s * known
    elif prediction_type == "sample":
        held = known
    else:
        raise ValueError(f"unknown prediction type {prediction_type!r}")
    return torch.lerp(prediction, held, keep.expand_as(prediction))  # exact at keep 0 and 1


def feathered_composite(
    painted: torch.Tensor, background: torch.Tensor, region: torch.Tensor, sigma: float
) -> torch.Tensor:
    """Paste ``painted`` into ``background`` inside ``region`` with a Gaussian-feathered edge, in pixel space.

    Latent blending holds the region outside a finding on the latent grid, but the decoder spreads every latent
    cell over its receptive field, so what a finding changes leaks past the mask's border (and the whole image takes
    one more autoencoder round trip). Compositing after decoding puts the change where it was asked for and keeps
    the rest of the image as it was; the feather (the mask blurred by a Gaussian of ``sigma`` pixels) hides the
    seam.

    Args:
        painted: ``(B, C, H, W)`` images with the finding.
        background: ``(B, C, H, W)`` the images it was painted into.
        region: ``(B, 1, H, W)`` binary mask, 1 where the finding is.
        sigma: the feather's Gaussian standard deviation in pixels; 0 is a hard edge.

    Returns:
        ``(B, C, H, W)`` ``w * painted + (1 - w) * background`` with ``w`` the feathered mask.
    """
    weight = (region > 0).to(painted.dtype)
    if sigma > 0:
        from monai.networks.layers import GaussianFilter

        weight = GaussianFilter(spatial_dims=2, sigma=sigma).to(weight.device)(weight).clamp(0, 1)
    return weight * painted + (1.0 - weight) * background


def feather_inside(region: torch.Tensor, sigma: float) -> torch.Tensor:
    """Weights that rise from 0 at ``region``'s border to 1 inside it, and are exactly 0 outside it.

    :func:`feathered_composite` lets the feather spill past the mask, which suits generated images; an edit of a
    real radiograph must leave every pixel outside the region as it was, so its feather lies inside:
    ``clamp(2 * blur(region) - 1, 0, 1)`` (the Gaussian-blurred mask is 1/2 on the border). ``sigma`` is capped at a
    third of the region's half-width (its deepest pixel's distance to the border), so a narrow region still takes
    the full change in its middle.

    Args:
        region: ``(B, 1, H, W)`` binary mask.
        sigma: the Gaussian's standard deviation in pixels; 0 gives the hard mask.

    Returns:
        ``(B, 1, H, W)`` weights in [0, 1], 0 wherever ``region`` is 0.
    """
    inside = (region > 0).float()
    if sigma <= 0 or not inside.any():
        return inside
    from monai.networks.layers import GaussianFilter
    from scipy.ndimage import distance_transform_edt

    # a region narrower than the feather would be faded out altogether: the feather is at most a third of the
    # region's own half-width (the largest distance from its border), so its middle always takes the full change
    depth = max(float(distance_transform_edt(mask[0].cpu().numpy()).max()) for mask in inside if mask.any())
    sigma = min(sigma, depth / 3)
    if sigma < 0.5:
        return inside
    blurred = GaussianFilter(spatial_dims=2, sigma=sigma).to(inside.device)(inside)
    return (2 * blurred - 1).clamp(0, 1) * inside
