# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Weights from other implementations into MONAI networks: each format's key map in one place.

The readers and the bundle writer (``monai_xreal.interop.convert``, ``monai_xreal.interop.bundle_writer``) are
imported from their modules: they need the bundle machinery, which the key maps do not.


Names are imported when first used.
"""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

_EXPORTS = {
    "LDM_PREFIXES": "monai_xreal.interop.compvis",
    "check_betas": "monai_xreal.interop.schedulers",
    "compvis_scheduler_definition": "monai_xreal.interop.schedulers",
    "diffusers_autoencoder_arguments": "monai_xreal.interop.diffusers",
    "diffusers_autoencoder_to_monai": "monai_xreal.interop.diffusers",
    "diffusers_scheduler_definition": "monai_xreal.interop.schedulers",
    "diffusers_unet_arguments": "monai_xreal.interop.diffusers",
    "diffusers_unet_to_monai": "monai_xreal.interop.diffusers",
    "ldm_autoencoder_to_monai": "monai_xreal.interop.compvis",
    "ldm_unet_to_monai": "monai_xreal.interop.compvis",
    "load_exactly": "monai_xreal.interop.compvis",
    "load_generative_state": "monai_xreal.interop.generative",
    "read_checkpoint": "monai_xreal.interop.compvis",
    "strip_prefix": "monai_xreal.interop.compvis",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_attributes(__name__, _EXPORTS)
