# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The whole benchmark in one run: recipes at each batch size, the overhead point, the plain-loop ratio, variants."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from monai_xreal.benchmark.recipes import FAST_RECIPE, REFERENCE_RECIPE, SamplingRecipe
from monai_xreal.benchmark.runner import (
    VARIANTS,
    benchmark_conditions,
    compare_text_to_image,
    measure_recipe,
    measure_variant,
)
from monai_xreal.benchmark.timing import format_spread, spread

__all__ = ["format_table", "hardware", "run_benchmark"]


def _cpu_name() -> str:
    try:  # Linux names the model; platform.processor() is often just the architecture
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict:
    """The machine the figures belong to."""
    info = {"device": str(device), "torch": torch.__version__, "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_benchmark(
    pipeline,
    segmenter=None,
    num_images: int = 8,
    batch_sizes: Sequence[int] = (1, 8),
    recipes: Sequence[SamplingRecipe] = (REFERENCE_RECIPE, FAST_RECIPE),
    overhead_point: tuple[int, int] | None = (2, 20),
    text_to_image: bool = True,
    variants: Sequence[str] = (),
    seed: int = 1000,
    progress: bool = True,
    source: str = "simulated",
    repeats: int = 1,
) -> dict:
    """Measure every recipe at every batch size on the same ``num_images`` conditions, then the overhead
    point, the pipeline against a plain scheduler loop, and the execution variants.

    Args:
        pipeline: an :class:`~monai_xreal.XRealPipeline`.
        segmenter: the anatomy judge, for the Dice beside each speed figure.
        num_images: conditions per measurement (each with a finding region: both stages run).
        batch_sizes: each recipe runs at each of these.
        recipes: the sampling recipes.
        overhead_point: ``(batch, steps)`` of the fast recipe whose overhead ratio is the headline, or ``None``.
        text_to_image: compare text-to-image sampling against :func:`plain_text_to_image`.
        variants: names from :data:`~monai_xreal.benchmark.runner.VARIANTS`, run on the fast recipe at the
            largest batch size.
        seed: seed of the conditions.
        progress: a progress bar over the measurements.
        source: ``"simulated"`` (simulated radiographs' anatomy, held-out real lung outlines), ``"phantoms"`` or
            ``"sample"`` (the embedded bundle's sample condition; timing only).
        repeats: rounds over the recipe rows (each round measures every row once, so the rows alternate); a row
            reports the median images/s with the spread of its rounds.

    Returns:
        ``{"hardware", "rows", "overhead", "text_to_image", "variants"}``, JSON-ready.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    largest = max([*batch_sizes, *(overhead_point[:1] if overhead_point else ())])
    if largest > num_images:
        raise ValueError(f"a batch of {largest} needs at least {largest} images (num_images is {num_images})")
    conditions = benchmark_conditions(num_images, max(64, pipeline.spatial_shape[0]), seed, source)
    fast = recipes[-1]
    rows = [recipe.with_batch(b) for recipe in recipes for b in batch_sizes]
    overhead = None
    if overhead_point is not None:
        batch, steps = overhead_point
        overhead = SamplingRecipe(
            f"{fast.name}-overhead", steps, fast.scheduler, fast.eta, fast.batched_guidance, batch
        )
    variant_recipe = fast.with_batch(max(batch_sizes))
    results: dict = {"hardware": hardware(pipeline.device), "num_images": num_images, "rows": [], "variants": [],
                     "variant_failures": {}}  # fmt: skip
    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    total = len(rows) * repeats + (overhead is not None) + len(variants) + text_to_image
    with tqdm(total=total, desc="benchmark", unit="run", disable=not progress) as bar:
        rounds: list[list[dict]] = [[] for _ in rows]
        for _ in range(repeats):  # round by round: every row is measured under the same machine conditions
            for i, recipe in enumerate(rows):
                bar.set_postfix_str(f"{recipe.name} batch {recipe.batch_size}")
                rounds[i].append(measure_recipe(pipeline, conditions, recipe, segmenter).as_dict())
                bar.update()
        results["rows"] = [_with_spread(runs) for runs in rounds]
        if overhead is not None:
            bar.set_postfix_str("overhead")
            results["overhead"] = measure_recipe(pipeline, conditions, overhead, segmenter).as_dict()
            bar.update()
        for variant in variants:
            bar.set_postfix_str(variant)
            results["variants"].append(
                measure_variant(pipeline, conditions, variant_recipe, variant, segmenter).as_dict()
            )
            bar.update()
        if text_to_image:
            bar.set_postfix_str("text-to-image")
            batch, steps = overhead_point or (2, fast.num_inference_steps)
            results["text_to_image"] = compare_text_to_image(pipeline, batch, steps)
            bar.update()
    return results


def _with_spread(runs: list[dict]) -> dict:
    """One row from its rounds: the median round's figures, with every round's images/s and their range."""
    speeds = sorted(r["images_per_second"] for r in runs)
    median = statistics.median(speeds)
    row = dict(min(runs, key=lambda r: abs(r["images_per_second"] - median)))
    return {**row, "images_per_second": median, "images_per_second_runs": [r["images_per_second"] for r in runs],
            "images_per_second_range": [speeds[0], speeds[-1]], "repeats": len(runs),
            "too_noisy": spread(speeds)["too_noisy"]}  # fmt: skip


def _speed(row: dict) -> str:
    low, high = row.get("images_per_second_range", [None, None])
    if low is None or row.get("repeats", 1) < 2:
        return f"{row['images_per_second']:.3f}"
    return format_spread({"median": row["images_per_second"], "min": low, "max": high, "too_noisy": row["too_noisy"]})


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(results: dict) -> str:
    """The benchmark as a Markdown table, with the overhead point and the plain-loop ratio underneath."""
    columns = ("recipe", "variant", "batch", "steps", "solver", "CFG", "img/s (range)", "UNet evals/img", "overhead",
               "peak MiB", "Dice")  # fmt: skip
    machine = results.get("hardware", {})
    lines = [", ".join(f"{k}: {v}" for k, v in machine.items()), ""] if machine else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    rows = results["rows"] + ([results["overhead"]] if "overhead" in results else []) + results["variants"]
    for r in rows:
        cfg = "batched" if r["batched_guidance"] else "2 calls"
        cells = (
            r["name"], r["variant"], r["batch_size"], r["num_inference_steps"], f"{r['scheduler']} eta {r['eta']:g}",
            cfg, _speed(r), _cell(r["unet_evaluations_per_image"], ".0f"),
            _cell(r["overhead"], ".3f"), _cell(r["peak_memory_mib"], ".0f"), _cell(r["mean_dice"], ".3f"),
        )  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if len(results["rows"]) > 1:
        base = results["rows"][0]["images_per_second"]
        speedups = [f"{r['name']} b{r['batch_size']} {r['images_per_second'] / base:.1f}x" for r in results["rows"][1:]]
        lines += ["", "speed-up over the first row: " + ", ".join(speedups)]
    for variant, failure in results.get("variant_failures", {}).items():
        lines.append(f"variant {variant} failed: {failure}")
    if "text_to_image" in results:
        t = results["text_to_image"]
        lines.append(
            f"text-to-image, batch {t['batch_size']}, {t['steps']} steps: pipeline / plain MONAI scheduler loop = "
            f"{t['ratio']:.3f} (median of {t['repeats']}, alternating; best {t['min_ratio']:.3f}; max image difference "
            f"{t['max_abs_image_difference']:.1e})"
        )
    return "\n".join(lines)
