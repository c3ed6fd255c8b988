# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""monai_xreal: controllable chest X-ray generation (XReal) as a MONAI plugin."""

from monai_xreal import bundle, control, data, engines, text, transforms
from monai_xreal.errors import XRealInputError
from monai_xreal.pipeline import XRealPipeline

__version__ = "0.6.0"
__all__ = ["XRealPipeline", "XRealInputError", "__version__"]
