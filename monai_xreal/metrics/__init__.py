# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Measuring generated CXRs: how closely they follow the requested conditions."""

from monai_xreal.metrics.adherence import (
    ADHERENCE_LABELS,
    AdherenceResult,
    anatomy_dice,
    load_segmenter,
    measure_anatomy_adherence,
    segment,
)
