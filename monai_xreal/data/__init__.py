# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Datalists and drawn conditions."""

from monai_xreal.data.conditions import CONDITION_KEYS, load_conditions
from monai_xreal.data.shapes import draw_anatomy, draw_box
