# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Classifier-free guidance with the conditional and unconditional branches in one UNet call."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["guided_prediction"]


def guided_prediction(
    unet: nn.Module,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    context: torch.Tensor,
    uncond_context: torch.Tensor | None,
    guidance_scale: float,
    batched: bool = True,
    **unet_kwargs,
) -> torch.Tensor:
    """The model's prediction, guided: ``uncond + scale * (cond - uncond)``.

    With ``guidance_scale == 1`` or no ``uncond_context`` this is one plain conditional call; otherwise both
    branches run as one batch of ``2B`` (``batched``, which is what makes guidance cheap on a GPU) or as two calls
    of ``B``, as XReal's release does.

    Args:
        unet: a MONAI ``DiffusionModelUNet`` (or anything with its ``forward(x, timesteps, context)``).
        latents: ``(B, C, h, w)`` noisy latents.
        timestep: scalar or ``(B,)`` integer timestep.
        context: ``(B, L, D)`` conditional embeddings.
        uncond_context: ``(B, L, D)`` unconditional (empty-prompt) embeddings, or ``None``.
        guidance_scale: the guidance weight ``w``; 1 gives the conditional prediction.
        batched: one UNet call on ``2B`` samples rather than two calls on ``B``; the result is the same.
        unet_kwargs: passed to every UNet call (e.g. ControlNet residuals; with ``batched``, already doubled for 2B).

    Returns:
        ``(B, C, h, w)`` guided prediction (noise, velocity or sample, as the model was trained).
    """
    batch = latents.shape[0]
    timesteps = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(batch)
    if uncond_context is None or guidance_scale == 1.0:
        return unet(latents, timesteps, context=context, **unet_kwargs)
    if not batched:
        uncond = unet(latents, timesteps, context=uncond_context, **unet_kwargs)
        cond = unet(latents, timesteps, context=context, **unet_kwargs)
        return uncond + guidance_scale * (cond - uncond)
    both = unet(
        torch.cat([latents, latents]),
        torch.cat([timesteps, timesteps]),
        context=torch.cat([uncond_context, context]),
        **unet_kwargs,
    )
    uncond, cond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)
