# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Controlled samplers side by side: UNet evaluations per image against adherence, placement, realism and speed.

Every recipe samples the same held-out conditions with the same seeds and the bundle's control knobs (guidance,
anatomy soft value and step fraction); only how it samples changes. Each image is judged by the bundle's own
segmenter and by the lung judge trained on real radiographs; placement compares each image with its empty-prompt
counterfactual; realism is KID in the real-CXR lung judge's features against the radiographs the conditions were
simulated from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from monai_xreal.benchmark.runner import BenchmarkCondition
from monai_xreal.benchmark.timing import time_networks, timed

__all__ = ["SAMPLER_RECIPES", "compare_samplers", "format_sampler_table", "placement_figure"]

SAMPLER_RECIPES: dict[str, dict] = {
    "xreal-100+100": dict(num_inference_steps=100, eta=1.0, blending="noise", pathology_feather=0.0),
    "fast-20+20": dict(num_inference_steps=20, eta=1.0, blending="noise", pathology_feather=0.0),
    "fast-20+20-feather": dict(num_inference_steps=20, eta=1.0, blending="noise", pathology_feather=2.0),
    "noise-4+4": dict(num_inference_steps=4, eta=1.0, blending="noise", pathology_feather=0.0),
    "noise-6+3-feather": dict(
        num_inference_steps=3, anatomy_num_inference_steps=6, eta=1.0, blending="noise", pathology_feather=2.0
    ),
    "noise-4+4-feather": dict(num_inference_steps=4, eta=1.0, blending="noise", pathology_feather=2.0),
    "data-4+4-feather": dict(num_inference_steps=4, eta=0.0, blending="data", pathology_feather=2.0),
    "data-6+3-feather": dict(
        num_inference_steps=3, anatomy_num_inference_steps=6, eta=0.0, blending="data", pathology_feather=2.0
    ),
}
"""Recipes compared by ``monai-xreal benchmark --samplers``: ``A+P`` anatomy-stage and pathology-stage steps,
``noise`` / ``data`` the blending rule, ``feather`` the finding composited with a 2-pixel edge."""


def compare_samplers(
    pipeline,
    conditions: Sequence[BenchmarkCondition],
    segmenter=None,
    lung_judge=None,
    recipes: Mapping[str, Mapping] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    keep_images: bool = False,
) -> list[dict]:
    """Sample ``conditions`` with each recipe and score the images.

    With ``keep_images``, each row also holds its ``images`` and ``counterfactuals`` (``(N, 1, H, W)`` tensors, for
    :func:`placement_figure`; not JSON).

    Returns:
        One row per recipe: ``unet_evaluations_per_image`` (counted), ``images_per_second`` (plain run, without
        the counting wrappers), ``dice`` (own segmenter), ``lung_dice`` (real-CXR judge), ``placement`` (share of
        the finding's change inside its mask), ``kid`` (in the judge's features, against the source radiographs).
    """
    from monai_xreal.metrics.adherence import anatomy_dice, segment
    from monai_xreal.metrics.fid import kernel_distance
    from monai_xreal.metrics.judges import judge_anatomy
    from monai_xreal.metrics.pathology import pathology_placement

    recipes = dict(recipes or SAMPLER_RECIPES)
    anatomy = torch.stack([c.anatomy for c in conditions])
    pathology = torch.stack([c.pathology for c in conditions])
    prompts, seeds = [c.prompt for c in conditions], [c.seed for c in conditions]
    sources = [c.image for c in conditions if c.image is not None]
    real_features = lung_judge.features(torch.stack(sources)) if lung_judge is not None and sources else None

    def sample(knobs: Mapping, with_prompts: bool) -> torch.Tensor:
        out = []
        for i in range(0, len(conditions), batch_size):
            batch_prompts = prompts[i : i + batch_size] if with_prompts else [""] * len(prompts[i : i + batch_size])
            images = pipeline(anatomy[i : i + batch_size], pathology[i : i + batch_size], batch_prompts,
                              seed=seeds[i : i + batch_size], **knobs)  # fmt: skip
            out.append(images.as_tensor().cpu())
        return torch.cat(out)

    rows = []
    for name, knobs in tqdm(recipes.items(), desc="samplers", unit="recipe", disable=not progress):
        seconds, images = timed(lambda knobs=knobs: sample(knobs, True), pipeline.device)
        with time_networks(pipeline, pipeline.device) as times:
            pipeline(anatomy[:1], pathology[:1], prompts[:1], seed=seeds[:1], **knobs)
        counterfactuals = sample(knobs, False)
        inside, _ = pathology_placement(images, counterfactuals, pathology)
        row = {"recipe": name, **{k: v for k, v in knobs.items()}, "unet_evaluations_per_image": times.unet_samples,
               "images_per_second": len(conditions) / seconds, "placement": float(np.nanmean(inside.numpy())),
               "num_images": len(conditions)}  # fmt: skip
        if segmenter is not None:
            row["dice"] = float(anatomy_dice(segment(segmenter, images), anatomy).mean())
        if lung_judge is not None:
            row["lung_dice"] = judge_anatomy(images, anatomy, lung_judge).summary()["real_lung_judge"]["lung_dice"]
            if real_features is not None:
                row["kid"] = kernel_distance(real_features, lung_judge.features(images))
        if keep_images:
            row.update(images=images, counterfactuals=counterfactuals)
        rows.append(row)
    return rows


def placement_figure(rows: Sequence[Mapping], pathology: torch.Tensor, num_conditions: int = 4) -> np.ndarray:
    """Where each recipe's finding went: per condition and recipe, the image with the requested mask outlined and
    the finding's change (``|image - counterfactual|``, brighter is more) beside it.

    Args:
        rows: :func:`compare_samplers` rows made with ``keep_images``.
        pathology: ``(N, 1, H, W)`` the requested masks.
        num_conditions: conditions shown (one row each).

    Returns:
        ``(H', W', 3)`` uint8, one column pair per recipe.
    """
    from monai_xreal.visualize import image_grid, overlay_masks

    tiles = []
    for i in range(min(num_conditions, len(pathology))):
        changes = [(r["images"][i] - r["counterfactuals"][i]).abs() for r in rows]
        scale = max(float(c.max()) for c in changes) or 1.0  # one scale per condition, across recipes
        for row, change in zip(rows, changes):
            tiles.append(overlay_masks(row["images"][i].numpy(), None, pathology[i].numpy()))
            tiles.append(overlay_masks((change / scale).numpy(), None, pathology[i].numpy()))
    return image_grid(tiles, 2 * len(rows))


def format_sampler_table(rows: Sequence[Mapping]) -> str:
    """The comparison as a Markdown table."""
    lines = ["| recipe | UNet evals/img | own Dice | real-CXR lung Dice | placement | KID (judge features) | img/s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip

    def cell(row, key, spec=".3f"):
        return "-" if row.get(key) is None else format(row[key], spec)

    for r in rows:
        lines.append(f"| {r['recipe']} | {r['unet_evaluations_per_image']} | {cell(r, 'dice')} | "
                     f"{cell(r, 'lung_dice')} | {cell(r, 'placement')} | {cell(r, 'kid', '.4f')} | "
                     f"{cell(r, 'images_per_second', '.2f')} |")  # fmt: skip
    return "\n".join(lines)
