# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The evaluation workflow: a :class:`~monai_xreal.metrics.GenerationEvaluation` assembled from files (the generator
bundle, the datalists and the judges' weights), for the command line and the bundle's ``evaluate.json``."""

from monai_xreal.evaluation.loading import build_evaluation, read_real_datalist

__all__ = ["build_evaluation", "read_real_datalist"]
