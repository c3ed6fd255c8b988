# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Training losses that MONAI does not provide in an offline-safe form."""

from monai_xreal.losses.perceptual import LocalPerceptualLoss

__all__ = [
    "LocalPerceptualLoss",
]
