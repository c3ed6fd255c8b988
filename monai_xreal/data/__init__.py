# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Datalists and drawn conditions."""

from monai_xreal.data.conditions import CONDITION_KEYS, load_conditions
from monai_xreal.data.shapes import draw_anatomy, draw_box
from monai_xreal.data.boxes import NIH_BOX_CLASSES, VINDR_CLASSES, nih_boxes_datalist, vindr_boxes_datalist
from monai_xreal.data.packaged import TXV_FILES, torchxrayvision_file
from monai_xreal.data.siim import SIIM_SPATIAL_SIZE, siim_pneumothorax_datalist
