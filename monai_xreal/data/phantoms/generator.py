# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Phantom CXRs with their anatomy label map, pathology mask, labels and report, deterministic per seed and index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_xreal.data.paired import DrawnFinding, PairedCXR, choose_findings, finding_chances, paired_sample
from monai_xreal.data.phantoms.anatomy import build_anatomy
from monai_xreal.data.phantoms.catalogue import MAX_SIZE, MIN_SIZE
from monai_xreal.data.phantoms.findings import PHANTOM_FINDINGS, draw_finding, load_box_prior
from monai_xreal.data.phantoms.lungs import load_lung_shapes
from monai_xreal.data.phantoms.render import render_radiograph
from monai_xreal.errors import XRealInputError
from monai_xreal.text.demographics import synthetic_demographics

__all__ = ["MAX_SIZE", "MIN_SIZE", "Phantom", "PhantomGenerator"]


Phantom = PairedCXR  # a phantom is one kind of paired sample


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
        probabilities = finding_chances(probabilities, PHANTOM_FINDINGS, 0.2)
        self.size, self.seed, self.probabilities = int(size), int(seed), probabilities
        self.shapes = load_lung_shapes(lung_masks)
        self.prior = load_box_prior(nih_boxes)

    def __call__(self, index: int, findings: Sequence[str] | None = None) -> Phantom:
        """Phantom ``index``; ``findings`` forces a set of findings instead of drawing them."""
        rng = np.random.default_rng([self.seed, int(index)])
        chosen = choose_findings(rng, PHANTOM_FINDINGS, self.probabilities, findings)
        ctr = rng.uniform(0.56, 0.66) if "Cardiomegaly" in chosen else np.clip(rng.normal(0.45, 0.025), 0.39, 0.49)
        anatomy = build_anatomy(self.shapes, rng, self.size, float(ctr))
        drawn = [draw_finding(name, anatomy, self.prior, rng) for name in chosen]
        image = render_radiograph(anatomy, [f for f in drawn if f.mask.any()], rng)
        shown = [DrawnFinding(f.name, f.mask, f.findings, f.impression, f.details) for f in drawn]
        # a finding squeezed out of a tiny lung is not reported
        return paired_sample(image, anatomy.label_map(), shown, PHANTOM_FINDINGS, {"ctr": round(anatomy.ctr, 3)},
                             synthetic_demographics(self.seed, index))  # fmt: skip
