# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The reverse-diffusion loop shared by both of XReal's stages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.networks.schedulers import Scheduler
from torch import nn

from monai_xreal.control.blending import BLENDING_RULES, blend_clean_prediction, blend_known_region
from monai_xreal.control.guidance import guided_prediction
from monai_xreal.control.schedulers import scheduler_step

__all__ = ["KnownRegion", "StepCallback", "denoise", "per_sample_randn"]

StepCallback = Callable[[str, int, torch.Tensor, torch.Tensor], None]
"""``callback(stage, step_index, timestep, latents)``, called after each step's blending, before the UNet."""


@dataclass
class KnownRegion:
    """A latent to hold on to while sampling.

    Attributes:
        latents: ``(B, C, h, w)`` clean known latent (already multiplied by the autoencoder's scale factor).
        keep: ``(B, 1, h, w)`` blending weights in [0, 1]; 1 keeps the known latent, 0 leaves the sample free.
        num_steps: hold the region during the first ``num_steps`` reverse steps (XReal: half for anatomy, all for
            pathology).
        rule: ``"noise"`` (XReal's: paste the known latent noised afresh before each step) or ``"data"`` (hold it
            in the model's clean estimate, consistently with the solver's state), see
            :data:`~monai_xreal.control.blending.BLENDING_RULES`.
    """

    latents: torch.Tensor
    keep: torch.Tensor
    num_steps: int
    rule: str = "noise"

    def __post_init__(self) -> None:
        if self.rule not in BLENDING_RULES:
            raise ValueError(f"blending rule must be one of {BLENDING_RULES}, got {self.rule!r}")


def per_sample_randn(shape: Sequence[int], generators: Sequence[torch.Generator], device, dtype) -> torch.Tensor:
    """``(len(generators), *shape)`` standard normal noise, sample ``i`` drawn from ``generators[i]``."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device, dtype=dtype) for g in generators])


def denoise(
    unet: nn.Module,
    scheduler: Scheduler,
    timesteps: torch.Tensor,
    latents: torch.Tensor,
    generators: Sequence[torch.Generator],
    context: torch.Tensor,
    uncond_context: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    eta: float = 1.0,
    known: KnownRegion | None = None,
    stage: str = "",
    callback: StepCallback | None = None,
    batched_guidance: bool = True,
) -> torch.Tensor:
    """Run the reverse process from ``latents`` over ``timesteps``.

    At each step: with XReal's ``"noise"`` rule, blend the known region in (with fresh per-sample noise at the
    current timestep); predict with classifier-free guidance; with the ``"data"`` rule, hold the known region in the
    prediction's clean estimate; step the scheduler. The final step is the scheduler's own (for
    DDIM with ``set_alpha_to_one=False`` it lands on alpha_bar_0); no known region is pasted after it.

    Args:
        unet: the frozen diffusion UNet.
        scheduler: a MONAI scheduler, timesteps already set.
        timesteps: ``(K,)`` timesteps, high to low.
        latents: ``(B, C, h, w)`` starting sample (pure noise at the first timestep).
        generators: one generator per sample for every random draw of the loop.
        context: ``(B, L, D)`` conditional text embeddings.
        uncond_context: ``(B, L, D)`` empty-prompt embeddings; ``None`` disables guidance.
        guidance_scale: classifier-free guidance weight.
        eta: DDIM noise weight.
        known: the region to hold (anatomy or pathology stage), or ``None`` for free sampling.
        stage: a name passed to ``callback``.
        callback: called after each blending, before the model call.
        batched_guidance: both guidance branches in one UNet call (see :func:`guided_prediction`).

    Returns:
        ``(B, C, h, w)`` the final latent.
    """
    if known is not None and known.rule == "data" and not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(
            f"the 'data' blending rule needs a noise schedule (alphas_cumprod); {type(scheduler).__name__}"
        )
    for i, t in enumerate(timesteps):
        holding = known is not None and i < known.num_steps
        if holding and known.rule == "noise":
            noise = per_sample_randn(latents.shape[1:], generators, latents.device, latents.dtype)
            noised = scheduler.add_noise(known.latents, noise, t.reshape(1).expand(latents.shape[0]))
            latents = blend_known_region(latents, noised, known.keep)
        if callback is not None:
            callback(stage, i, t, latents)
        prediction = guided_prediction(unet, latents, t, context, uncond_context, guidance_scale, batched_guidance)
        if holding and known.rule == "data":
            alpha_bar = scheduler.alphas_cumprod[int(t)]
            prediction = blend_clean_prediction(
                prediction, latents, known.latents, known.keep, alpha_bar, scheduler.prediction_type
            )
        next_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        latents = scheduler_step(scheduler, prediction, t, latents, generators, eta=eta, next_timestep=next_t)
    return latents
