# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI schedulers driven the way XReal drives DDIM: leading timesteps, eta, one random stream per sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler, RFlowScheduler, Scheduler

__all__ = ["SCHEDULERS", "make_scheduler", "scheduler_name", "scheduler_step", "set_timesteps"]

SCHEDULERS: dict[str, type[Scheduler]] = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "pndm": PNDMScheduler}


def scheduler_name(scheduler: Scheduler) -> str:
    """The :data:`SCHEDULERS` name of a scheduler object (its class name if it is another kind)."""
    names = {cls: name for name, cls in SCHEDULERS.items()}
    return names.get(type(scheduler), type(scheduler).__name__)


def make_scheduler(name: str, like: Scheduler) -> Scheduler:
    """A scheduler of another kind on the same training noise schedule as ``like``.

    Args:
        name: one of ``"ddim"``, ``"ddpm"``, ``"pndm"``.
        like: the bundle's scheduler, whose ``betas`` (and so the trained noise levels) are reused.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)} or pass a scheduler object")
    if not hasattr(like, "alphas_cumprod"):
        raise ValueError(f"the bundle's {type(like).__name__} has no beta schedule to share; pass a scheduler object")
    kwargs = {"num_train_timesteps": like.num_train_timesteps, "prediction_type": like.prediction_type}
    if name == "ddpm":
        kwargs.update(clip_sample=False)
    else:
        # the last step lands on alpha_bar_0, as CompVis / XReal's DDIM does
        kwargs.update(set_alpha_to_one=False, steps_offset=getattr(like, "steps_offset", 1))
        kwargs.update({"clip_sample": False} if name == "ddim" else {"skip_prk_steps": True})
    scheduler = SCHEDULERS[name](**kwargs)
    # the same betas, not a re-derivation from schedule names: whatever schedule the model was trained on carries over
    scheduler.betas = like.betas.clone()
    scheduler.alphas = like.alphas.clone()
    scheduler.alphas_cumprod = like.alphas_cumprod.clone()
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = like.alphas_cumprod[0].clone()
    return scheduler


def set_timesteps(
    scheduler: Scheduler, num_inference_steps: int, device: torch.device | str, spacing: str = "leading"
) -> torch.Tensor:
    """Set and return the scheduler's inference timesteps, high to low.

    Args:
        scheduler: a MONAI scheduler.
        num_inference_steps: number of reverse steps.
        device: where the timesteps live.
        spacing: ``"leading"`` gives CompVis / XReal's DDIM grid ``T/K * (K-1, ..., 1, 0) + steps_offset``
            (991, 981, ..., 1 for 100 of 1000 steps), which agrees with the ``t - T // K`` previous-step rule
            inside MONAI's DDIM and DDPM steps; ``"scheduler"`` keeps the scheduler's own grid.
    """
    if spacing not in ("leading", "scheduler"):
        raise ValueError(f"timestep spacing must be 'leading' or 'scheduler', got {spacing!r}")
    scheduler.set_timesteps(num_inference_steps, device=device)
    if spacing == "leading" and isinstance(scheduler, (DDIMScheduler, DDPMScheduler)):
        ratio = scheduler.num_train_timesteps // num_inference_steps
        offset = getattr(scheduler, "steps_offset", 0)
        steps = torch.arange(num_inference_steps - 1, -1, -1, device=device, dtype=torch.long) * ratio + offset
        scheduler.timesteps = steps
    return scheduler.timesteps


def scheduler_step(
    scheduler: Scheduler,
    model_output: torch.Tensor,
    timestep: torch.Tensor,
    latents: torch.Tensor,
    generators: Sequence[torch.Generator],
    eta: float = 1.0,
    next_timestep: torch.Tensor | None = None,
) -> torch.Tensor:
    """One reverse step, drawing each sample's step noise from its own generator.

    Steps that draw noise (DDIM with ``eta > 0``, DDPM) run per sample so that a sample's result does not depend
    on what else is in its batch; deterministic steps run on the whole batch.

    Args:
        scheduler: a MONAI scheduler whose timesteps are set.
        model_output: ``(B, C, h, w)`` the (guided) model prediction.
        timestep: the current timestep.
        latents: ``(B, C, h, w)`` the current sample.
        generators: one ``torch.Generator`` per sample.
        eta: DDIM's noise weight (0 deterministic, 1 DDPM-like); ignored by other schedulers.
        next_timestep: the next timestep, used by the rectified-flow scheduler.

    Returns:
        ``(B, C, h, w)`` the sample at the previous timestep.
    """
    t = int(timestep)
    if isinstance(scheduler, DDIMScheduler) and eta > 0:
        return torch.cat(
            [
                scheduler.step(model_output[i : i + 1], t, latents[i : i + 1], eta=eta, generator=g)[0]
                for i, g in enumerate(generators)
            ]
        )
    if isinstance(scheduler, DDPMScheduler):
        return torch.cat(
            [
                scheduler.step(model_output[i : i + 1], t, latents[i : i + 1], generator=g)[0]
                for i, g in enumerate(generators)
            ]
        )
    if isinstance(scheduler, DDIMScheduler):
        return scheduler.step(model_output, t, latents, eta=0.0)[0]
    if isinstance(scheduler, RFlowScheduler):
        nxt = None if next_timestep is None else int(next_timestep)
        return scheduler.step(model_output, t, latents, next_timestep=nxt)[0]
    return scheduler.step(model_output, t, latents)[0]
