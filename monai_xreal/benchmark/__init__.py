# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Sampling speed measured side by side: throughput, network time, overhead, memory, with adherence beside it."""

from monai_xreal.benchmark.recipes import FAST_RECIPE, REFERENCE_RECIPE, SamplingRecipe
from monai_xreal.benchmark.runner import (
    VARIANTS,
    BenchmarkCondition,
    RecipeResult,
    benchmark_conditions,
    compare_text_to_image,
    measure_recipe,
    measure_variant,
    plain_text_to_image,
)
from monai_xreal.benchmark.suite import format_table, hardware, run_benchmark
from monai_xreal.benchmark.timing import NetworkTimes, PeakMemory, peak_memory, time_networks
