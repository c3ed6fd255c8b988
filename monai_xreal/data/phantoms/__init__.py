# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Phantom CXRs grounded in real anatomy: real lung shapes, real finding positions, a radiograph-like image.

Names are imported when first used (``catalogue`` holds what ``--help`` lists).
"""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

_EXPORTS = {
    "ANATOMY_LABELS": "monai_xreal.data.phantoms.anatomy",
    "MAX_SIZE": "monai_xreal.data.phantoms.catalogue",
    "MIN_SIZE": "monai_xreal.data.phantoms.catalogue",
    "PHANTOM_FINDINGS": "monai_xreal.data.phantoms.catalogue",
    "PHANTOM_FOLDERS": "monai_xreal.data.phantoms.dataset",
    "Anatomy": "monai_xreal.data.phantoms.anatomy",
    "BoxPrior": "monai_xreal.data.phantoms.findings",
    "Finding": "monai_xreal.data.phantoms.findings",
    "LungShapes": "monai_xreal.data.phantoms.lungs",
    "Phantom": "monai_xreal.data.phantoms.generator",
    "PhantomDataset": "monai_xreal.data.phantoms.dataset",
    "PhantomGenerator": "monai_xreal.data.phantoms.generator",
    "build_anatomy": "monai_xreal.data.phantoms.anatomy",
    "load_box_prior": "monai_xreal.data.phantoms.findings",
    "load_lung_shapes": "monai_xreal.data.phantoms.lungs",
    "phantom_item": "monai_xreal.data.phantoms.dataset",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_attributes(__name__, _EXPORTS)
