# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A memorisation report: every generated image's nearest training images and copy score, the flagged ones, and
two figures (the flagged pairs side by side; the score distributions with the share above the threshold)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from monai_xreal.errors import XRealInputError
from monai_xreal.io.atomic import atomic_path, write_text_atomically
from monai_xreal.memorisation.search import (
    DEFAULT_THRESHOLD,
    CopyCheck,
    CopyDetector,
    TrainingFeatures,
    check_images,
    read_image_paths,
)
from monai_xreal.visualize import save_rgb

__all__ = ["SCHEMA", "MemorisationReport", "find_copies"]

SCHEMA = "monai_xreal.memorisation/1"
_TILE = 128
_GREY, _BLUE, _RED, _TEXT = (150, 150, 150), (66, 135, 245), (220, 40, 40), (20, 20, 20)


@dataclass
class MemorisationReport:
    """The result of :func:`find_copies`.

    Attributes:
        checks: ``{generated image path: check}`` in the generated set's order.
        settings: the detector's method and calibration (:meth:`CopyDetector.settings`).
        reference_scores: copy scores of training images against the other training images (what non-copies score).
        sources: where the sets came from (``{"generated", "training"}``: datalist paths or ``"paths"``).
    """

    checks: Mapping[str, CopyCheck]
    settings: Mapping
    reference_scores: Sequence[float]
    sources: Mapping[str, str]

    @property
    def threshold(self) -> float:
        return float(self.settings["threshold"])

    @property
    def flagged(self) -> list[str]:
        """The flagged generated images' paths, in the generated set's order."""
        return [path for path, check in self.checks.items() if check.flagged]

    def summary(self) -> dict:
        """Counts, the share flagged and the score distributions' quantiles (generated, and training vs training)."""
        scores = [check.score for check in self.checks.values()]
        reference = list(self.reference_scores)
        return {
            "generated_images": len(scores),
            "flagged": len(self.flagged),
            "flagged_share": round(len(self.flagged) / max(len(scores), 1), 4),
            "generated_scores": _quantiles(scores),
            "training_reference_scores": _quantiles(reference),
            "training_reference_share_above_threshold": round(
                sum(s >= self.threshold for s in reference) / max(len(reference), 1), 4
            ),
        }

    def as_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "sources": dict(self.sources),
            "method": dict(self.settings),
            "summary": self.summary(),
            "flagged": self.flagged,
            "images": [{"image": path, **check.as_dict()} for path, check in self.checks.items()],
        }

    def save(self, path: str | Path, figures: bool = True, max_pairs: int = 24) -> list[Path]:
        """The report as JSON at ``path`` and, with ``figures``, ``<stem>_pairs.png`` and ``<stem>_summary.png``
        beside it; each file written whole or not at all. Returns the files written."""
        path = Path(path)
        written = [write_text_atomically(path, json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n")]
        if figures:
            for name, figure in (("pairs", self.pairs_figure(max_pairs)), ("summary", self.summary_figure())):
                target = path.with_name(f"{path.stem}_{name}.png")
                with atomic_path(target) as temporary:
                    save_rgb(figure, temporary)
                written.append(target)
        return written

    def pairs_figure(self, max_pairs: int = 24, columns: int = 3) -> np.ndarray:
        """``(H, W, 3)`` uint8: each flagged image (highest score first, ``max_pairs`` at most) beside its nearest
        training image, with the score, similarity and SSIM; the closest pairs when none is flagged."""
        from monai_xreal.visualize import image_grid

        ranked = sorted(self.checks.items(), key=lambda item: -item[1].score)
        shown = [item for item in ranked if item[1].flagged][:max_pairs]
        title = f"{len(self.flagged)} of {len(self.checks)} generated images flagged (score >= {self.threshold:g})"
        if not shown:
            shown = ranked[: min(6, max_pairs)]
            title += "; the closest pairs"
        tiles = []
        for path, check in shown:
            near = check.nearest
            tiles.append(_caption(_tile(path), f"generated: score {check.score:.2f}", Path(path).name))
            tiles.append(_caption(_tile(near.image), f"training: r {near.similarity:.2f} SSIM {near.ssim:.2f}",
                                  Path(near.image).name))  # fmt: skip
        grid = image_grid(tiles, columns=2 * min(columns, len(shown)))
        return _with_title(grid, [title, "left: generated, right: its nearest training image"])

    def summary_figure(self, width: int = 520) -> np.ndarray:
        """``(H, W, 3)`` uint8: histograms of the generated images' copy scores and of the training images' scores
        against the other training images, the threshold, and the shares above it."""
        from monai_xreal.metrics.figures import bar_chart, stack_vertically

        summary = self.summary()
        histogram = _histogram(
            {"training vs training": list(self.reference_scores),
             "generated vs training": [c.score for c in self.checks.values()]},
            {"training vs training": _GREY, "generated vs training": _BLUE}, self.threshold, width,
        )  # fmt: skip
        shares = bar_chart(
            {"generated flagged": summary["flagged_share"],
             "training vs training": summary["training_reference_share_above_threshold"]},
            "share at or above the threshold", vmax=1.0, width=width,
        )  # fmt: skip
        return stack_vertically([histogram, shares])


def find_copies(
    generated: str | Path | Sequence[str | Path],
    training: str | Path | Sequence[str | Path],
    threshold: float = DEFAULT_THRESHOLD,
    neighbours: int = 3,
    generated_key: str = "training",
    training_key: str = "training",
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> MemorisationReport:
    """Every generated image's nearest training images and copy score (see :mod:`monai_xreal.memorisation.search`).

    Args:
        generated, training: MONAI datalists (their ``generated_key`` / ``training_key`` list; the phantom and
            simulated sets' datalists too) or sequences of image paths. Images are read one at a time; the training
            set is kept as 64 x 64 uint8 thumbnails (4 KiB an image) and 16 x 16 features.
        threshold: the copy score from which an image is flagged.
        neighbours: nearest training images reported per generated image.
        batch_size: images read and compared at once.
        device: where the comparisons run.
        progress: show progress bars.

    Raises:
        XRealInputError: a missing or unreadable datalist or image, an empty set, fewer than two training images, or
            images of different channel counts (e.g. RGB among grey-scale).
    """
    if batch_size < 1:
        raise XRealInputError("batch_size", f"must be a positive integer, got {batch_size}")
    generated_paths = read_image_paths(generated, "generated", generated_key)  # checked before the long part
    channels: list[int] = []
    features = TrainingFeatures.read(training, training_key, batch_size, progress, channels)
    detector = CopyDetector(features, threshold, neighbours, device=device)
    checks = check_images(detector, generated_paths, batch_size, progress, channels)
    sources = {name: str(value) if isinstance(value, (str, Path)) else "paths"
               for name, value in (("generated", generated), ("training", training))}  # fmt: skip
    return MemorisationReport(checks, detector.settings(), [round(float(s), 4) for s in detector.reference_scores],
                              sources)  # fmt: skip


def _quantiles(values: Sequence[float]) -> dict:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {name: round(float(np.quantile(array, q)), 4) for name, q in
            (("min", 0.0), ("median", 0.5), ("q95", 0.95), ("max", 1.0))}  # fmt: skip


def _tile(path: str) -> np.ndarray:
    """``(128, 128, 3)`` uint8 view of an image file (as the report's images were read)."""
    from monai_xreal.io import load_cxr
    from monai_xreal.visualize import overlay_masks

    image = load_cxr(path).as_tensor().float()
    image = F.interpolate(image[None], size=(_TILE, _TILE), mode="area")[0]
    return overlay_masks(image.clamp(0, 1).numpy())


def _caption(tile: np.ndarray, *lines: str) -> np.ndarray:
    """The tile with ``lines`` written at its bottom on a dark band (each truncated to fit)."""
    canvas = Image.fromarray(tile)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    top = tile.shape[0] - 12 * len(lines) - 2
    draw.rectangle((0, top, tile.shape[1], tile.shape[0]), fill=(0, 0, 0))
    for i, text in enumerate(lines):
        while text and draw.textlength(text, font=font) > tile.shape[1] - 4:
            text = text[:-2] + "…" if len(text) > 2 else ""
        draw.text((2, top + 1 + 12 * i), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _with_title(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    header = Image.new("RGB", (image.shape[1], 14 * len(lines) + 6), (255, 255, 255))
    draw = ImageDraw.Draw(header)
    for i, text in enumerate(lines):
        draw.text((4, 3 + 14 * i), text, fill=_TEXT, font=ImageFont.load_default())
    return np.concatenate([np.asarray(header), image])


def _histogram(series: Mapping[str, Sequence[float]], colours: Mapping[str, tuple], threshold: float,
               width: int = 520, height: int = 200, bins: int = 40) -> np.ndarray:  # fmt: skip
    """``(H, width, 3)`` uint8: each series' histogram as a share per bin (outlined bars, one colour each), a red line
    at ``threshold``, the score axis from the smallest value (-1 to -3) to 1."""
    values = [v for s in series.values() for v in s]
    low = min(max(min(values, default=-1.0), -3.0), -1.0)  # far-off images (scores below -3) share the first bin
    edges = np.linspace(low, 1.0 + 1e-9, bins + 1)
    shares = {name: np.histogram(np.clip(s, low, 1.0), edges)[0] / max(len(s), 1) for name, s in series.items()}
    peak = max([float(h.max()) for h in shares.values()] + [1e-9])
    left, right, top, bottom = 36, width - 8, 34, height - 22
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((4, 4), "copy score: share of images per bin", fill=_TEXT, font=font)

    def x_of(value: float) -> float:
        return left + (value - low) / (1.0 - low) * (right - left)

    for i, (name, counts) in enumerate(shares.items()):
        colour = colours[name]
        draw.rectangle((4 + 200 * i, 19, 14 + 200 * i, 28), outline=colour, width=2)
        draw.text((18 + 200 * i, 18), f"{name} ({len(series[name])} images)", fill=colour, font=font)
        for b, share in enumerate(counts):
            if share > 0:
                y = bottom - share / peak * (bottom - top)
                draw.rectangle((x_of(edges[b]) + 1, y, x_of(edges[b + 1]) - 1, bottom), outline=colour, width=2)
    draw.line((left, bottom, right, bottom), fill=_TEXT)
    for tick in np.linspace(low, 1.0, 5):
        draw.text((x_of(tick) - 10, bottom + 4), f"{tick:.1f}", fill=_TEXT, font=font)
    draw.line((x_of(threshold), top - 4, x_of(threshold), bottom), fill=_RED, width=2)
    draw.text((min(x_of(threshold) + 3, right - 80), top - 4), f"threshold {threshold:g}", fill=_RED, font=font)
    return np.asarray(canvas)
