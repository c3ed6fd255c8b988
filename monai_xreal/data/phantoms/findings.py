# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Pathologies drawn into a phantom's anatomy, each with its mask, its effect on the radiograph and its report text.

Where a finding sits is sampled from real box annotations (NIH ChestX-ray14's ``BBox_List_2017.csv``: 984 boxes on
1024 x 1024 images), so nodules, consolidations, effusions and pneumothoraces fall where radiologists drew them;
a sample outside the intended lung is drawn again. VinDr-CXR's ``train.csv`` has no image sizes, so its boxes cannot
be normalised without the DICOMs and are not used here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_xreal.data.boxes import nih_boxes_datalist
from monai_xreal.data.packaged import torchxrayvision_file
from monai_xreal.data.phantoms.anatomy import Anatomy
from monai_xreal.data.phantoms.catalogue import PHANTOM_FINDINGS

__all__ = ["PHANTOM_FINDINGS", "BoxPrior", "Finding", "draw_finding", "load_box_prior"]

# which real box classes give each finding's position (NIH names)
_BOX_SOURCES = {
    "Pleural Effusion": ("Effusion",),
    "Pneumothorax": ("Pneumothorax",),
    "Consolidation": ("Pneumonia", "Infiltrate", "Atelectasis"),
    "Nodule": ("Nodule", "Mass"),
}
_ZONES = ("upper", "mid", "lower")


@dataclass
class Finding:
    """One drawn finding: ``mask`` ``(S, S)`` bool; ``density`` added attenuation (fluid, tissue) and ``lucent``
    the region with no lung markings (free air), both ``(S, S)`` float in [0, 1]; ``findings`` / ``impression``
    are its report sentences."""

    name: str
    mask: np.ndarray
    findings: str
    impression: str
    density: np.ndarray | None = None
    lucent: np.ndarray | None = None
    line: np.ndarray | None = None
    details: dict = field(default_factory=dict)


class BoxPrior:
    """Real box positions per finding, as ``(cx, cy, w, h)`` fractions of the image.

    Args:
        boxes: finding name -> ``(N, 4)`` array of normalised ``(cx, cy, w, h)``.
    """

    def __init__(self, boxes: dict[str, np.ndarray]) -> None:
        self.boxes = boxes

    def sample(self, finding: str, rng: np.random.Generator) -> np.ndarray | None:
        """A random real box for ``finding``, or None if the table has none."""
        table = self.boxes.get(finding)
        return None if table is None or len(table) == 0 else table[int(rng.integers(len(table)))]


@functools.lru_cache(maxsize=4)
def load_box_prior(nih_bbox_csv: str | Path | None = None) -> BoxPrior:
    """The box prior from NIH's ``BBox_List_2017.csv`` (default: the copy in the torchxrayvision wheel)."""
    table = nih_boxes_datalist(torchxrayvision_file("nih_boxes") if nih_bbox_csv is None else nih_bbox_csv)
    by_class: dict[str, list] = {}
    for item in table:
        for (x0, y0, x1, y1), name in zip(item["boxes"], item["box_labels"]):
            by_class.setdefault(name, []).append(
                ((x0 + x1) / 2048, (y0 + y1) / 2048, (x1 - x0) / 1024, (y1 - y0) / 1024)
            )
    return BoxPrior(
        {
            finding: np.asarray(sum((by_class.get(c, []) for c in sources), []), np.float32).reshape(-1, 4)
            for finding, sources in _BOX_SOURCES.items()
        }
    )


def _side_of_column(anatomy: Anatomy, column: float) -> str:
    # the image's left holds the patient's right lung
    return "right" if column < anatomy.midline else "left"


def _zone(anatomy: Anatomy, row: float) -> str:
    top, bottom = anatomy.lung_box[:2]
    return _ZONES[int(np.clip((row - top) / (bottom - top) * 3, 0, 2))]


def _position(anatomy: Anatomy, finding: str, prior: BoxPrior, rng: np.random.Generator, tries: int = 30):
    """A real box for ``finding`` whose centre lies in a lung (``(row, col, box_w, box_h)`` in pixels)."""
    size = anatomy.heart.shape[0]
    lungs = anatomy.right_lung | anatomy.left_lung
    for _ in range(tries if len(prior.boxes.get(finding, ())) else 0):
        cx, cy, w, h = prior.sample(finding, rng) * size
        if lungs[int(np.clip(cy, 0, size - 1)), int(np.clip(cx, 0, size - 1))]:
            return cy, cx, w, h
    rows, columns = np.nonzero(lungs)  # no real box landed in this phantom's lungs: any lung pixel
    pick = int(rng.integers(len(rows)))
    return float(rows[pick]), float(columns[pick]), 0.1 * size, 0.1 * size


def _blob(shape, centre, radius: float, rng: np.random.Generator, lobes: int) -> np.ndarray:
    """A soft irregular blob in [0, 1]: a few overlapping Gaussians around ``centre``."""
    yy, xx = np.ogrid[0 : shape[0], 0 : shape[1]]
    field = np.zeros(shape, np.float32)
    for _ in range(lobes):
        cy, cx = centre + rng.normal(0.0, 0.45 * radius, 2) * (lobes > 1)
        r = radius * rng.uniform(0.6, 1.0)
        field = np.maximum(field, np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.6 * r) ** 2))))
    return field


def _cardiomegaly(anatomy: Anatomy, **_) -> Finding:
    text = f"The heart is enlarged (cardiothoracic ratio {anatomy.ctr:.2f})."
    return Finding("Cardiomegaly", anatomy.heart.copy(), text, "Cardiomegaly.", details={"ctr": round(anatomy.ctr, 3)})


def _effusion(anatomy: Anatomy, prior: BoxPrior, rng: np.random.Generator, **_) -> Finding:
    cy, cx, _, h = _position(anatomy, "Pleural Effusion", prior, rng)
    side = _side_of_column(anatomy, cx)
    lung = anatomy.lung(side)
    rows, columns = np.nonzero(lung)
    top, bottom = rows.min(), rows.max() + 1
    depth = np.clip(h / (bottom - top), 0.15, 0.4) * (bottom - top)
    # meniscus: the fluid climbs along the lateral chest wall, so its surface rises towards the lung's outer edge
    medial, lateral = (columns.max(), columns.min()) if side == "right" else (columns.min(), columns.max())
    xx = np.arange(lung.shape[1], dtype=np.float32)
    towards_wall = np.clip((xx - medial) / (lateral - medial), 0.0, 1.0)
    surface = bottom - depth + 0.25 * depth - 0.6 * depth * towards_wall**2
    mask = lung & (np.arange(lung.shape[0])[:, None] >= surface[None, :])
    density = ndimage.gaussian_filter(mask.astype(np.float32), 0.006 * lung.shape[0]) * 0.9
    where = "right" if side == "right" else "left"
    return Finding(
        "Pleural Effusion",
        mask,
        f"{where.capitalize()} pleural effusion with blunting of the costophrenic angle and a meniscus.",
        f"{where.capitalize()} pleural effusion.",
        density=density,
        details={"side": side},
    )


def _pneumothorax(anatomy: Anatomy, prior: BoxPrior, rng: np.random.Generator, **_) -> Finding:
    _, cx, _, _ = _position(anatomy, "Pneumothorax", prior, rng)
    side = _side_of_column(anatomy, cx)
    lung = anatomy.lung(side)
    rows, columns = np.nonzero(lung)
    # the collapsed lung shrinks towards its hilum (medial, at mid height), leaving air apically and laterally
    hilum = np.array([rows.min() + 0.55 * np.ptp(rows), columns.max() if side == "right" else columns.min()])
    scale = rng.uniform(0.6, 0.82)
    yy, xx = np.mgrid[0 : lung.shape[0], 0 : lung.shape[1]].astype(np.float32)
    source = np.stack([hilum[0] + (yy - hilum[0]) / scale, hilum[1] + (xx - hilum[1]) / scale])
    collapsed = ndimage.map_coordinates(lung.astype(np.float32), source, order=0) > 0.5
    collapsed &= lung
    mask = lung & ~collapsed
    edge = collapsed & ~ndimage.binary_erosion(collapsed) & ndimage.binary_dilation(mask)
    line = ndimage.gaussian_filter(edge.astype(np.float32), 0.5) * 2.0
    return Finding(
        "Pneumothorax",
        mask,
        f"{side.capitalize()} pneumothorax: a visceral pleural line with no lung markings beyond it.",
        f"{side.capitalize()} pneumothorax.",
        lucent=ndimage.gaussian_filter(mask.astype(np.float32), 1.0),
        line=np.clip(line, 0, 1),
        details={"side": side, "collapse": round(float(scale), 3)},
    )


@dataclass(frozen=True)
class _Opacity:
    """A focal opacity in the lung: ``lobes`` Gaussians whose size follows the real box, within ``radius_range``
    (fractions of the image); ``findings`` / ``impression`` are templates over ``side`` and ``zone``."""

    name: str
    box_share: float
    radius_range: tuple[float, float]
    lobes: int
    strength: float
    findings: str
    impression: str

    def __call__(self, anatomy: Anatomy, prior: BoxPrior, rng: np.random.Generator, **_) -> Finding:
        cy, cx, w, h = _position(anatomy, self.name, prior, rng)
        side, zone = _side_of_column(anatomy, cx), _zone(anatomy, cy)
        size = anatomy.heart.shape[0]
        radius = max(float(np.clip(self.box_share * min(w, h), *(r * size for r in self.radius_range))), 1.5)
        field = _blob(anatomy.heart.shape, np.array([cy, cx]), radius, rng, self.lobes) * anatomy.lung(side)
        return Finding(
            self.name,
            field > 0.5,
            self.findings.format(side=side, zone=zone),
            self.impression.format(side=side.capitalize(), zone=zone),
            density=self.strength * np.clip(field * 1.5, 0, 1),
            details={"side": side, "zone": zone},
        )


_consolidation = _Opacity(
    "Consolidation", 0.35, (0.04, 0.12), 4, 0.75,
    "Airspace consolidation in the {side} {zone} zone.", "{side} {zone} zone consolidation.",
)  # fmt: skip
_nodule = _Opacity(
    "Nodule", 0.48, (0.024, 0.056), 1, 0.8,
    "A well-circumscribed nodule in the {side} {zone} zone.", "{side} {zone} zone pulmonary nodule.",
)  # fmt: skip


_DRAW = {
    "Cardiomegaly": _cardiomegaly,
    "Pleural Effusion": _effusion,
    "Pneumothorax": _pneumothorax,
    "Consolidation": _consolidation,
    "Nodule": _nodule,
}


def draw_finding(name: str, anatomy: Anatomy, prior: BoxPrior, rng: np.random.Generator) -> Finding:
    """Draw one of :data:`PHANTOM_FINDINGS` into ``anatomy`` (cardiomegaly only reports the enlarged heart, which
    :func:`build_anatomy` made with its ratio)."""
    return _DRAW[name](anatomy=anatomy, prior=prior, rng=rng)
