# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""XReal's controllers: latent known-region blending, classifier-free guidance and the sampling loop."""

from monai_xreal.control.blending import (
    BLENDING_RULES,
    anatomy_keep_weights,
    blend_clean_prediction,
    blend_known_region,
    feather_inside,
    feathered_composite,
    latent_region,
    pathology_keep_weights,
)
from monai_xreal.control.controlnet import ControlledUNet, controlnet_condition
from monai_xreal.control.guidance import guided_prediction
from monai_xreal.control.sampling import KnownRegion, StepCallback, denoise, per_sample_randn
from monai_xreal.control.schedulers import SCHEDULERS, make_scheduler, scheduler_name, scheduler_step, set_timesteps

__all__ = [
    "BLENDING_RULES",
    "SCHEDULERS",
    "ControlledUNet",
    "KnownRegion",
    "StepCallback",
    "anatomy_keep_weights",
    "blend_clean_prediction",
    "blend_known_region",
    "controlnet_condition",
    "denoise",
    "feather_inside",
    "feathered_composite",
    "guided_prediction",
    "latent_region",
    "make_scheduler",
    "pathology_keep_weights",
    "per_sample_randn",
    "scheduler_name",
    "scheduler_step",
    "set_timesteps",
]
