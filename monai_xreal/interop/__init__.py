# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Weights from other implementations into MONAI networks: each format's key map in one place.

The readers and the bundle writer (``monai_xreal.interop.convert``, ``monai_xreal.interop.bundle_writer``) are
imported from their modules: they need the bundle machinery, which the key maps do not.
"""

from monai_xreal.interop.compvis import (
    LDM_PREFIXES,
    ldm_autoencoder_to_monai,
    ldm_unet_to_monai,
    load_exactly,
    read_checkpoint,
    strip_prefix,
)
from monai_xreal.interop.diffusers import (
    diffusers_autoencoder_arguments,
    diffusers_autoencoder_to_monai,
    diffusers_unet_arguments,
    diffusers_unet_to_monai,
)
from monai_xreal.interop.generative import load_generative_state
from monai_xreal.interop.schedulers import check_betas, compvis_scheduler_definition, diffusers_scheduler_definition
