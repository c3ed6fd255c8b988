# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""monai_xreal: controllable chest X-ray generation (XReal) as a MONAI plugin.

Subpackages and :class:`XRealPipeline` are imported when first used (so ``monai-xreal --help`` does not wait for
MONAI's networks to load).
"""

from __future__ import annotations

import importlib

from monai_xreal.errors import XRealInputError
from monai_xreal.version import __version__

__all__ = ["XRealInputError", "XRealPipeline", "__version__"]

_SUBPACKAGES = (
    "bundle",
    "control",
    "data",
    "engines",
    "evaluation",
    "text",
    "transforms",
    "simulation",
    "metrics",
    "networks",
)


def __getattr__(name: str):
    if name == "XRealPipeline":
        from monai_xreal.pipeline import XRealPipeline

        return XRealPipeline
    if name in _SUBPACKAGES:
        return importlib.import_module(f"monai_xreal.{name}")
    raise AttributeError(f"module 'monai_xreal' has no attribute {name!r}")
