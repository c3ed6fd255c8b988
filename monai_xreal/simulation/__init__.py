# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Chest radiographs simulated from a labelled CT (deform, insert findings in 3D, cast PA rays, expose, display),
each with its exact anatomy label map, pathology mask, labels and report. Names are imported when first used."""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes
from monai_xreal.simulation.catalogue import SIMULATED_FINDINGS

_EXPORTS = {
    "LabelledCT": "ct", "load_labelled_ct": "ct", "read_structures": "ct", "LOBES": "ct", "STRUCTURE_GROUPS": "ct",
    "RayProjector": "projector", "PAGeometry": "projector", "Pose": "projector", "Projection": "projector",
    "Exposure": "radiograph", "attenuation": "radiograph", "expose": "radiograph", "display": "radiograph",
    "OutlineWarps": "outlines", "LUNG_SHAPE_POOLS": "outlines", "shape_pool": "outlines",
    "EditableCT": "findings", "insert_finding": "findings", "scale_heart": "findings",
    "anatomy_fields": "fields", "RadiographSimulator": "simulator", "write_simulated_set": "dataset",
    "write_phantom_set": "dataset",
}  # fmt: skip
__all__ = ["SIMULATED_FINDINGS", *_EXPORTS]


__getattr__ = lazy_attributes(__name__, _EXPORTS)
