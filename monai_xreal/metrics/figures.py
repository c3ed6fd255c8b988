# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The evaluation figure: conditions beside their generated samples, and bar charts of the metrics (Pillow only)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from monai_xreal.visualize import image_grid, overlay_masks

__all__ = ["bar_chart", "evaluation_figure", "metric_panels", "stack_vertically"]

_BAR = (66, 135, 245)
_TEXT = (20, 20, 20)


def bar_chart(values: Mapping[str, float], title: str, vmax: float | None = None, width: int = 360) -> np.ndarray:
    """A horizontal bar chart as ``(H, width, 3)`` uint8: one labelled bar per entry, its value printed beside it.

    Args:
        values: ``{label: value}``, values >= 0.
        title: printed above the bars.
        vmax: the value of a full-length bar (default: the largest value).
        width: image width in pixels.
    """
    font = ImageFont.load_default()
    row, top, label_width, value_width = 18, 22, width * 2 // 5, 56
    height = top + row * max(1, len(values)) + 6
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill=_TEXT, font=font)
    scale = vmax if vmax is not None else max([v for v in values.values()] + [1e-12])
    room = width - label_width - value_width - 8
    for i, (label, value) in enumerate(values.items()):
        y = top + i * row
        draw.text((4, y + 3), label[:28], fill=_TEXT, font=font)
        length = int(round(room * min(max(value, 0.0) / scale, 1.0))) if scale > 0 else 0
        draw.rectangle((label_width, y + 2, label_width + max(length, 1), y + row - 3), fill=_BAR)
        draw.text((label_width + length + 4, y + 3), f"{value:.3g}", fill=_TEXT, font=font)
    return np.asarray(canvas)


def metric_panels(report: Mapping) -> list[np.ndarray]:
    """Bar charts of a report's metrics: FID on its own scale, and the [0, 1] scores (Dice, MS-SSIM, placement,
    classifier)."""
    metrics = report.get("metrics", {})
    panels = []
    if "fid" in metrics:
        panels.append(bar_chart({name: v["fid"] for name, v in metrics["fid"].items()}, "FID (lower is better)"))
    unit: dict[str, float] = {}
    anatomy = metrics.get("anatomy", {})
    unit.update({f"Dice {name}": value for name, value in anatomy.get("per_label", {}).items()})
    if "mean_dice" in anatomy:
        unit["Dice mean"] = anatomy["mean_dice"]
    if metrics.get("diversity", {}).get("ms_ssim") is not None:
        unit["MS-SSIM (lower: diverse)"] = metrics["diversity"]["ms_ssim"]
    pathology = metrics.get("pathology", {})
    placement = pathology.get("placement", {})
    if placement.get("inside_fraction") is not None:
        unit["finding inside mask"] = placement["inside_fraction"]
        unit["mask area (chance)"] = placement["mask_area_fraction"]
    classifier = pathology.get("classifier", {})
    if classifier.get("requested_label_probability") is not None:
        unit["classifier p(label)"] = classifier["requested_label_probability"]
        if classifier.get("empty_prompt_probability") is not None:
            unit["p(label), empty prompt"] = classifier["empty_prompt_probability"]
    auc = metrics.get("classifier_auc", {})
    if auc.get("mean_auc") is not None:
        unit["classifier mAUC (prompted labels)"] = auc["mean_auc"]
    if unit:
        panels.append(bar_chart(unit, "scores in [0, 1]", vmax=1.0))
    return panels


def _tile(image: torch.Tensor, size: tuple[int, int], anatomy=None, pathology=None, alpha: float = 0.35) -> np.ndarray:
    def fit(x, mode):
        x = torch.as_tensor(x).float()
        return x if tuple(x.shape[1:]) == size else F.interpolate(x[None], size=size, mode=mode)[0]

    anatomy = None if anatomy is None else fit(anatomy, "nearest-exact").numpy()
    pathology = None if pathology is None else fit(pathology, "nearest-exact").numpy()
    return overlay_masks(fit(image, "area").numpy(), anatomy, pathology, alpha)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    """The tile with ``text`` written along its bottom edge (truncated to fit)."""
    canvas = Image.fromarray(tile)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    while text and draw.textlength(text, font=font) > tile.shape[1] - 4:
        text = text[:-2] + "…" if len(text) > 2 else ""
    draw.text((2, tile.shape[0] - 13), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def evaluation_figure(result, max_conditions: int = 6, max_samples: int = 4) -> np.ndarray:
    """``(H, W, 3)`` uint8: one row per condition (its masks, then its samples), the metric charts underneath.

    Args:
        result: an :class:`~monai_xreal.metrics.evaluation.EvaluationResult`.
        max_conditions: rows.
        max_samples: samples per row.
    """
    by_condition: dict[int, list] = {}
    for sample in result.samples:
        if len(by_condition) < max_conditions or sample.condition in by_condition:
            by_condition.setdefault(sample.condition, []).append(sample)
    size = tuple(result.samples[0].image.shape[1:])
    columns = 1 + min(max_samples, max(len(s) for s in by_condition.values()))
    tiles = []
    for index, samples in by_condition.items():
        condition = result.conditions[index]
        blank = torch.zeros((1, *size))
        masks = _tile(blank, size, condition.get("anatomy"), condition.get("pathology"), alpha=0.9)
        tiles.append(_caption(masks, condition.get("prompt") or "(empty prompt)"))
        for sample in samples[: columns - 1]:
            tiles.append(_tile(sample.image, size, None, condition.get("pathology")))
        tiles.extend(np.full((*size, 3), 255, np.uint8) for _ in range(columns - 1 - min(len(samples), columns - 1)))
    grid = image_grid(tiles, columns)
    panels = metric_panels(result.report)
    if not panels:
        return grid
    charts = stack_vertically(panels)
    width = max(grid.shape[1], charts.shape[1])
    return stack_vertically([_pad_width(grid, width), _pad_width(charts, width)])


def _pad_width(image: np.ndarray, width: int) -> np.ndarray:
    return np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=255)


def stack_vertically(images: list[np.ndarray]) -> np.ndarray:
    width = max(image.shape[1] for image in images)
    return np.concatenate([_pad_width(image, width) for image in images])
