# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Datalists from the public CXR datasets, real condition data, phantoms and drawn conditions."""

from monai_xreal.data.conditions import CONDITION_KEYS, load_conditions
from monai_xreal.data.shapes import draw_anatomy, draw_box
from monai_xreal.data.boxes import NIH_BOX_CLASSES, VINDR_CLASSES, nih_boxes_datalist, vindr_boxes_datalist
from monai_xreal.data.packaged import TXV_FILES, torchxrayvision_file
from monai_xreal.data.siim import SIIM_SPATIAL_SIZE, siim_pneumothorax_datalist
from monai_xreal.data.iu_xray import iu_xray_datalist, iu_xray_report
from monai_xreal.data.mimic import (
    CHEXPERT_CLASSES,
    MISSING_POLICIES,
    UNCERTAIN_POLICIES,
    mimic_cxr_datalist,
    mimic_cxr_path,
)
from monai_xreal.data.reports import REPORT_SECTIONS, report_sections
from monai_xreal.data.chexmask import CHEXMASK_ID_COLUMNS, CHEXMASK_STRUCTURES, chexmask_datalist
