# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Memorisation: does a generator copy its training images? Each generated image's nearest training images (on
equalised, band-passed thumbnails compared over small shifts), a copy score calibrated on the training set's own
nearest-neighbour distances, the flagged images, and figures (``monai-xreal memorisation``; ``generate-dataset
--exclude-copies-of``). See docs/memorisation.md.

Names are imported when first used.
"""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

_EXPORTS = {
    "DEFAULT_THRESHOLD": "monai_xreal.memorisation.search",
    "CopyCheck": "monai_xreal.memorisation.search",
    "CopyDetector": "monai_xreal.memorisation.search",
    "MemorisationReport": "monai_xreal.memorisation.report",
    "Neighbour": "monai_xreal.memorisation.search",
    "TrainingFeatures": "monai_xreal.memorisation.search",
    "find_copies": "monai_xreal.memorisation.report",
    "read_image_paths": "monai_xreal.memorisation.search",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_attributes(__name__, _EXPORTS)
