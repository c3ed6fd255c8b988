# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Reading conditions and writing generated images."""

from monai_xreal.io.readers import load_mask
from monai_xreal.io.writers import FORMATS, save_images, staged_output
from monai_xreal.io.cxr import load_cxr
