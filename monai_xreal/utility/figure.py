# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The utility figure: each protocol's mean AUC with its confidence interval, then each label's (Pillow only, as the
other figures of the package)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from monai_xreal.io.atomic import atomic_path
from monai_xreal.metrics.figures import stack_vertically
from monai_xreal.visualize import save_rgb

__all__ = ["interval_chart", "save_utility_figure", "utility_figure"]

_POINT = (66, 135, 245)
_REFERENCE = (235, 64, 52)
_TEXT = (20, 20, 20)
_GRID = (215, 215, 215)


def interval_chart(
    rows: Mapping[str, Mapping], title: str, low: float, high: float = 1.0, width: int = 640,
    reference: str | None = None,
) -> np.ndarray:  # fmt: skip
    """A dot-and-whisker chart as ``(H, width, 3)`` uint8: one row per entry, its ``mean`` as a dot and its
    ``[low, high]`` interval as a whisker on a common axis, the values printed on the right.

    Args:
        rows: ``{label: {"mean", "low", "high"}}`` (``low``/``high`` may be ``None``: dot only).
        title: printed above the rows.
        low, high: the axis range.
        width: image width in pixels.
        reference: the row drawn in another colour, with a vertical line at its mean.
    """
    font = ImageFont.load_default()
    row, top, label_width, value_width, bottom = 20, 24, 150, 150, 18
    height = top + row * max(1, len(rows)) + bottom
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill=_TEXT, font=font)
    left, right = label_width, width - value_width
    span = max(high - low, 1e-9)

    def x(value: float) -> int:
        return int(round(left + (right - left) * (min(max(value, low), high) - low) / span))

    step = 0.05 if span <= 0.3 else 0.1
    for k in range(math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9) + 1):
        draw.line((x(k * step), top - 2, x(k * step), height - bottom), fill=_GRID)
        draw.text((x(k * step) - 10, height - bottom + 3), f"{k * step:.2f}", fill=_TEXT, font=font)
    if reference in rows:
        at = x(rows[reference]["mean"])
        draw.line((at, top - 2, at, height - bottom), fill=_REFERENCE)
    for i, (label, value) in enumerate(rows.items()):
        y = top + i * row + row // 2
        colour = _REFERENCE if label == reference else _POINT
        draw.text((4, y - 6), label[:24], fill=_TEXT, font=font)
        text = f"{value['mean']:.3f}"
        if value.get("low") is not None and value.get("high") is not None:
            a, b = x(value["low"]), x(value["high"])
            draw.line((a, y, b, y), fill=colour, width=2)
            draw.line((a, y - 4, a, y + 4), fill=colour, width=2)
            draw.line((b, y - 4, b, y + 4), fill=colour, width=2)
            text += f" [{value['low']:.3f}, {value['high']:.3f}]"
        m = x(value["mean"])
        draw.ellipse((m - 4, y - 4, m + 4, y + 4), fill=colour)
        draw.text((right + 8, y - 6), text, fill=_TEXT, font=font)
    return np.asarray(canvas)


def utility_figure(report: Mapping, width: int = 640) -> np.ndarray:
    """The report's figure: a panel of each protocol's mean AUC with its CI, then one panel per label.

    Args:
        report: what :func:`monai_xreal.utility.run_utility_study` returns.
        width: image width in pixels.
    """
    protocols = report["protocols"]
    lows = [v for p in protocols.values() for s in (p["mean_auc"], *p["per_label"].values())
            for v in (s["low"], s["mean"]) if v is not None]  # fmt: skip
    low = min(0.5, math.floor(min(lows, default=0.5) * 10) / 10)
    reference = "real" if "real" in protocols else None
    confidence = report.get("settings", {}).get("bootstrap", {}).get("confidence", 0.95)
    seeds = report.get("settings", {}).get("seeds")
    title = f"mean AUC over the labels ({confidence:.0%} bootstrap CI over {seeds} seed(s) and the test images)"
    panels = [interval_chart({n: p["mean_auc"] for n, p in protocols.items()}, title, low, width=width,
                             reference=reference)]  # fmt: skip
    for label in report["settings"]["classes"]:
        rows = {n: p["per_label"][label] for n, p in protocols.items()}
        panels.append(interval_chart(rows, f"AUC: {label}", low, width=width, reference=reference))
    return stack_vertically(panels)


def save_utility_figure(report: Mapping, path: str | Path) -> Path:
    """Write :func:`utility_figure` as a PNG, whole or not at all; returns ``path``."""
    with atomic_path(path) as temporary:
        save_rgb(utility_figure(report), temporary)
    return Path(path)
