# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Networks beyond MONAI core's: layouts that load weights published for other implementations exactly."""

from monai_xreal.networks.compvis import CompVisAutoencoderKL, CompVisDiffusionModelUNet
from monai_xreal.networks.conditioning import AdaptedContextUNet
