# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Sampling speed measured side by side: throughput, network time, overhead, memory, with adherence beside it.

Names are imported when first used (the recipes, which ``--help`` lists, load no heavy library)."""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

_EXPORTS = {
    "FAST_RECIPE": "recipes",
    "REFERENCE_RECIPE": "recipes",
    "VARIANTS": "runner",
    "BenchmarkCondition": "runner",
    "NetworkTimes": "timing",
    "PeakMemory": "timing",
    "RecipeResult": "runner",
    "SamplingRecipe": "recipes",
    "benchmark_conditions": "runner",
    "compare_text_to_image": "runner",
    "format_table": "suite",
    "hardware": "suite",
    "measure_recipe": "runner",
    "measure_variant": "runner",
    "peak_memory": "timing",
    "plain_text_to_image": "runner",
    "run_benchmark": "suite",
    "time_networks": "timing",
    "xreal_size_pipeline": "full_size",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_attributes(__name__, _EXPORTS)
