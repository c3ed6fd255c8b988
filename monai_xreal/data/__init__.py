# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Datalists from the public CXR datasets, real condition data, phantoms and drawn conditions.

Names are imported when first used.
"""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

_EXPORTS = {
    "CHEXMASK_ID_COLUMNS": "monai_xreal.data.chexmask",
    "CHEXMASK_STRUCTURES": "monai_xreal.data.chexmask",
    "CHEXPERT_CLASSES": "monai_xreal.data.mimic",
    "CONDITION_KEYS": "monai_xreal.data.conditions",
    "MISSING_POLICIES": "monai_xreal.data.mimic",
    "NIH_BOX_CLASSES": "monai_xreal.data.boxes",
    "REPORT_SECTIONS": "monai_xreal.data.reports",
    "SIIM_SPATIAL_SIZE": "monai_xreal.data.siim",
    "TXV_FILES": "monai_xreal.data.packaged",
    "UNCERTAIN_POLICIES": "monai_xreal.data.mimic",
    "VINDR_CLASSES": "monai_xreal.data.boxes",
    "chexmask_datalist": "monai_xreal.data.chexmask",
    "chexpert_datalist": "monai_xreal.data.chexpert",
    "draw_anatomy": "monai_xreal.data.shapes",
    "draw_box": "monai_xreal.data.shapes",
    "iu_xray_datalist": "monai_xreal.data.iu_xray",
    "iu_xray_report": "monai_xreal.data.iu_xray",
    "load_conditions": "monai_xreal.data.conditions",
    "mimic_cxr_datalist": "monai_xreal.data.mimic",
    "mimic_cxr_path": "monai_xreal.data.mimic",
    "nih_boxes_datalist": "monai_xreal.data.boxes",
    "report_sections": "monai_xreal.data.reports",
    "siim_pneumothorax_datalist": "monai_xreal.data.siim",
    "torchxrayvision_file": "monai_xreal.data.packaged",
    "vindr_boxes_datalist": "monai_xreal.data.boxes",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_attributes(__name__, _EXPORTS)
