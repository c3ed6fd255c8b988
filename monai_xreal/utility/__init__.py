# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Synthetic-data utility: the classifier bundle trained on real, real + synthetic, synthetic, and synthetic then real
images, tested on held-out real images, with per-label and mean AUC and bootstrap confidence intervals.

Names are imported when first used.
"""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

_EXPORTS = {
    "PROTOCOL_KINDS": "monai_xreal.utility.protocols",
    "LabelledSet": "monai_xreal.utility.datalists",
    "Protocol": "monai_xreal.utility.protocols",
    "UtilityRun": "monai_xreal.utility.runs",
    "UtilityStudy": "monai_xreal.utility.study",
    "bootstrap_auc": "monai_xreal.utility.stats",
    "build_protocols": "monai_xreal.utility.protocols",
    "read_labelled_datalist": "monai_xreal.utility.datalists",
    "roc_auc_per_label": "monai_xreal.utility.stats",
    "run_utility_study": "monai_xreal.utility.api",
    "save_utility_figure": "monai_xreal.utility.figure",
    "utility_figure": "monai_xreal.utility.figure",
    "weighted_roc_auc": "monai_xreal.utility.stats",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_attributes(__name__, _EXPORTS)
