# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Networks beyond MONAI core's: layouts that load weights published for other implementations exactly."""

from monai_xreal.networks.compvis import CompVisAutoencoderKL, CompVisDiffusionModelUNet
from monai_xreal.networks.conditioning import AdaptedContextUNet
from monai_xreal.networks.lung_unet import DoubleConv, VGG11UNet
from monai_xreal.networks.medsam import (
    LITE_MEDSAM_IMAGE_SIZE,
    LiteMedSAM,
    SAMMaskDecoder,
    SAMPromptEncoder,
    TinyViTEncoder,
    load_lite_medsam,
)

__all__ = [
    "LITE_MEDSAM_IMAGE_SIZE",
    "AdaptedContextUNet",
    "CompVisAutoencoderKL",
    "CompVisDiffusionModelUNet",
    "DoubleConv",
    "LiteMedSAM",
    "SAMMaskDecoder",
    "SAMPromptEncoder",
    "TinyViTEncoder",
    "VGG11UNet",
    "load_lite_medsam",
]
