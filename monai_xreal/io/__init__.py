# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Reading conditions and writing generated images. Names are imported when first used (``--help`` stays fast)."""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

_EXPORTS = {
    "FORMATS": "writers",
    "load_cxr": "cxr",
    "load_mask": "readers",
    "read_radiograph": "radiograph",
    "write_radiograph": "radiograph",
    "save_images": "writers",
    "staged_folder": "writers",
    "IMAGE_FORMATS": "formats",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_attributes(__name__, _EXPORTS)
