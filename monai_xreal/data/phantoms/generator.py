# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Phantom CXRs with their anatomy label map, pathology mask, labels and report, deterministic per seed and index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_xreal.data.phantoms.anatomy import build_anatomy
from monai_xreal.data.phantoms.findings import PHANTOM_FINDINGS, draw_finding, load_box_prior
from monai_xreal.data.phantoms.lungs import load_lung_shapes
from monai_xreal.data.phantoms.render import render_radiograph
from monai_xreal.errors import XRealInputError

__all__ = ["Phantom", "PhantomGenerator", "MIN_SIZE", "MAX_SIZE"]

MIN_SIZE, MAX_SIZE = 64, 512
_NORMAL_REPORT = {
    "findings": "The lungs are clear. The cardiomediastinal silhouette is within normal limits. "
    "No pleural effusion or pneumothorax.",
    "impression": "No acute cardiopulmonary process.",
}


@dataclass
class Phantom:
    """One phantom, arrays in MONAI's order (axis 0 = image x, left to right; axis 1 = y, top to bottom).

    Attributes:
        image: ``(1, X, Y)`` float32 radiograph in [0, 1].
        anatomy: ``(1, X, Y)`` uint8 label map: 1 the patient's right lung (image left), 2 the left lung, 3 heart,
            4 upper mediastinum.
        pathology: ``(1, X, Y)`` uint8, 1 where any finding is.
        labels: ``{finding: 0 or 1}`` over :data:`PHANTOM_FINDINGS` plus ``"No Finding"``.
        report: ``{"findings": ..., "impression": ...}``.
        boxes: ``(N, 4)`` float32 ``(x_min, y_min, x_max, y_max)`` of each finding's mask; ``box_labels`` their names.
        details: per-finding facts (side, zone, cardiothoracic ratio ``ctr`` of the heart, ...).
    """

    image: np.ndarray
    anatomy: np.ndarray
    pathology: np.ndarray
    labels: dict[str, int]
    report: dict[str, str]
    boxes: np.ndarray
    box_labels: list[str]
    details: dict


class PhantomGenerator:
    """Makes phantom ``index`` of a set from ``seed``: the same pair always gives the same phantom, in any order.

    Args:
        size: image side in pixels, 64 to 512.
        seed: the set's seed.
        probabilities: chance of each finding (:data:`PHANTOM_FINDINGS`), drawn independently; default 0.2 each,
            so about a third of the phantoms are normal.
        lung_masks: a zip or folder of real lung masks (default: torchxrayvision's v7labs masks).
        nih_boxes: NIH ``BBox_List_2017.csv`` for finding positions (default: torchxrayvision's copy).
    """

    def __init__(
        self,
        size: int = 128,
        seed: int = 0,
        probabilities: Mapping[str, float] | None = None,
        lung_masks: str | Path | None = None,
        nih_boxes: str | Path | None = None,
    ) -> None:
        if not MIN_SIZE <= int(size) <= MAX_SIZE:
            raise XRealInputError("size", f"must be between {MIN_SIZE} and {MAX_SIZE}, got {size}")
        probabilities = dict.fromkeys(PHANTOM_FINDINGS, 0.2) if probabilities is None else dict(probabilities)
        unknown = sorted(set(probabilities) - set(PHANTOM_FINDINGS))
        if unknown:
            raise XRealInputError("probabilities", f"unknown finding(s) {unknown}; known: {list(PHANTOM_FINDINGS)}")
        if any(not 0.0 <= p <= 1.0 for p in probabilities.values()):
            raise XRealInputError("probabilities", f"must lie in [0, 1], got {probabilities}")
        self.size, self.seed, self.probabilities = int(size), int(seed), probabilities
        self.shapes = load_lung_shapes(lung_masks)
        self.prior = load_box_prior(nih_boxes)

    def __call__(self, index: int, findings: Sequence[str] | None = None) -> Phantom:
        """Phantom ``index``; ``findings`` forces a set of findings instead of drawing them."""
        rng = np.random.default_rng([self.seed, int(index)])
        draws = rng.random(len(PHANTOM_FINDINGS))
        if findings is None:
            chosen = [name for name, u in zip(PHANTOM_FINDINGS, draws) if u < self.probabilities.get(name, 0.0)]
        else:
            chosen = [name for name in PHANTOM_FINDINGS if name in set(findings)]
            if len(chosen) != len(set(findings)):
                raise XRealInputError(
                    "findings", f"unknown finding in {list(findings)}; known: {list(PHANTOM_FINDINGS)}"
                )
        ctr = rng.uniform(0.56, 0.66) if "Cardiomegaly" in chosen else np.clip(rng.normal(0.45, 0.025), 0.39, 0.49)
        anatomy = build_anatomy(self.shapes, rng, self.size, float(ctr))
        drawn = [draw_finding(name, anatomy, self.prior, rng) for name in chosen]
        drawn = [f for f in drawn if f.mask.any()]  # a finding squeezed out of a tiny lung is not reported
        image = render_radiograph(anatomy, drawn, rng)

        pathology = np.zeros(image.shape, np.uint8)
        boxes = []
        for finding in drawn:
            pathology |= finding.mask.astype(np.uint8)
            rows, columns = np.nonzero(finding.mask)
            boxes.append((columns.min(), rows.min(), columns.max() + 1, rows.max() + 1))
        names = [f.name for f in drawn]
        labels = {name: int(name in names) for name in PHANTOM_FINDINGS}
        labels["No Finding"] = int(not names)
        report = _NORMAL_REPORT if not drawn else {
            "findings": " ".join(f.findings for f in drawn),
            "impression": " ".join(f.impression for f in drawn),
        }  # fmt: skip
        details = {"ctr": round(anatomy.ctr, 3), **{f.name: f.details for f in drawn}}
        return Phantom(
            image=image.T[None],
            anatomy=anatomy.label_map().T[None],
            pathology=pathology.T[None],
            labels=labels,
            report=dict(report),
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            box_labels=names,
            details=details,
        )
