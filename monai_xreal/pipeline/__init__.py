# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Generation pipelines over a frozen text-conditioned latent diffusion model.

- :mod:`~monai_xreal.pipeline.settings`: the sampling knobs, one definition each (no heavy imports); which seed
  each image gets is :mod:`monai_xreal.seeding`'s;
- :mod:`~monai_xreal.pipeline.conditions`: the user's masks and prompts, checked and brought to the model grid;
- :mod:`~monai_xreal.pipeline.codec`: images to scaled latents and back;
- :class:`XRealPipeline`: XReal's anatomy stage then pathology stage;
- :class:`ControlNetPipeline`: the ControlNet baseline.

The pipelines are imported on first use, so that the settings can be read without loading torch.
"""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

__all__ = ["KNOBS", "XREAL_SAMPLING", "ControlNetPipeline", "LatentDiffusionPipeline", "SamplingSettings",
           "XRealPipeline"]  # fmt: skip

_EXPORTS = {
    "XRealPipeline": "xreal",
    "ControlNetPipeline": "controlnet",
    "LatentDiffusionPipeline": "base",
    "KNOBS": "settings",
    "XREAL_SAMPLING": "settings",
    "SamplingSettings": "settings",
}


__getattr__ = lazy_attributes(__name__, _EXPORTS)
