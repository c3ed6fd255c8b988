# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Findings inserted into the CT before projection, so that each one looks on the radiograph the way its 3D cause
makes it look, and its 2D mask is exact.

Every inserter edits an :class:`EditableCT` (a per-image copy of the prepared CT) and marks the voxels that hold the
finding with the finding's number in ``EditableCT.findings``; the simulator projects those to get the mask. What
each does, in the radiograph frame (``z`` down, ``x`` from the patient's right to left, ``y`` back to front):

- **Cardiomegaly** (and the heart size of every image): the heart and what surrounds it are scaled about the heart's
  centre, with a smooth fall-off so the lungs give way; the target is a cardiothoracic ratio.
- **Pleural effusion**: fluid (10-20 HU) fills the lung below a level that rises towards the lateral chest wall
  (the meniscus); the costophrenic angle and the dome disappear under it.
- **Pneumothorax**: the lung collapses towards its hilum, denser for the lost volume; air (-1000 HU, no vessels)
  takes the space between it and the chest wall; the visceral pleura is a thin line.
- **Consolidation**: part of one lobe (a smooth random region, sometimes the whole lobe) turns to -40..40 HU.
- **Atelectasis**: one lobe collapses towards its hilum and becomes airless; the rest of its space stays aerated.
- **Nodule / Mass**: a lobulated soft-tissue sphere (8-28 mm / 32-60 mm across) inside a lobe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from monai_xreal.simulation.catalogue import SIMULATED_FINDINGS
from monai_xreal.simulation.ct import LOBES, ORGANS, LabelledCT

__all__ = [
    "SIMULATED_FINDINGS",
    "EditableCT",
    "InsertedFinding",
    "insert_finding",
    "scale_heart",
    "scaled_heart_labels",
]

_LOBE_NAMES = ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe")
_LOBE_SIDES = ("right", "right", "right", "left", "left")


@dataclass
class EditableCT:
    """One image's copy of the CT: ``hu`` and ``labels`` as in :class:`LabelledCT`, and ``findings`` ``(Z, X, Y)``
    uint8, the number (1, 2, ...) of the finding each voxel holds (0 none). ``occupied`` lists what was already
    used (sides, lobes), so findings do not land on top of each other."""

    hu: torch.Tensor
    labels: torch.Tensor
    findings: torch.Tensor
    spacing: float
    occupied: set = field(default_factory=set)

    @classmethod
    def of(cls, ct: LabelledCT) -> EditableCT:
        return cls(ct.hu.clone(), ct.labels.clone(), torch.zeros_like(ct.labels), ct.spacing)

    def lung(self, side: str) -> torch.Tensor:
        return (self.labels >= 1) & (self.labels <= 3) if side == "right" else (self.labels >= 4) & (self.labels <= 5)

    def lobe(self, index: int) -> torch.Tensor:
        return self.labels == index + 1

    def next_number(self) -> int:
        return int(self.findings.max()) + 1


@dataclass
class InsertedFinding:
    """A finding put into the CT: its ``number`` in :attr:`EditableCT.findings`, report sentences, details, and
    ``rule``, how its 2D mask is read from the projection (``"projection"``: where the ray crosses it;
    ``"pneumothorax"``: where the ray crosses its air and almost no lung; ``"heart"``: the heart's label)."""

    name: str
    number: int
    findings: str
    impression: str
    details: dict
    rule: str = "projection"
    side: str | None = None


def _box(mask: torch.Tensor, margin: int, shape) -> tuple[slice, ...]:
    where = torch.nonzero(mask)
    low = (where.min(0).values - margin).clamp(min=0).tolist()
    high = [min(int(h) + margin + 1, s) for h, s in zip(where.max(0).values.tolist(), shape)]
    return tuple(slice(a, b) for a, b in zip(low, high))


def _resample(volumes: list[torch.Tensor], source_index: torch.Tensor, modes: list[str]) -> list[torch.Tensor]:
    """Read ``volumes`` (each ``(z, x, y)``) at the voxel coordinates ``source_index`` ``(z, x, y, 3)``."""
    size = torch.tensor(volumes[0].shape, dtype=torch.float32)
    grid = (2 * source_index / (size - 1) - 1)[..., [2, 1, 0]][None]
    return [F.grid_sample(v[None, None].float(), grid, mode=m, padding_mode="border", align_corners=True)[0, 0]
            for v, m in zip(volumes, modes)]  # fmt: skip


def _voxel_grid(box: tuple[slice, ...]) -> torch.Tensor:
    axes = [torch.arange(s.start, s.stop, dtype=torch.float32) for s in box]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def _collapse(ct: EditableCT, region: torch.Tensor, centre: torch.Tensor, factors: torch.Tensor):
    """Shrink ``region`` towards ``centre`` (voxel coordinates) by ``factors`` (per axis). Returns the box and, in
    it, the collapsed part of the region, the part left behind, and the values read from where each collapsed voxel
    came from (hu, labels, findings)."""
    box = _box(region, 1, ct.hu.shape)
    points = _voxel_grid(box)
    source = centre + (points - centre) / factors
    inside, hu, labels, findings = _resample(
        [region, ct.hu, ct.labels, ct.findings], source, ["nearest", "bilinear", "nearest", "nearest"]
    )
    local = region[box]
    collapsed = local & (inside > 0.5)
    return (
        box,
        collapsed,
        local & ~collapsed,
        hu,
        labels.round().to(ct.labels.dtype),
        findings.round().to(ct.findings.dtype),
    )


def _smooth_noise(rng: np.random.Generator, shape, knots: int = 4) -> torch.Tensor:
    coarse = torch.from_numpy(rng.standard_normal((1, 1, knots, knots, knots)).astype(np.float32))
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0]


def _soft(mask: torch.Tensor, sigma_voxels: float) -> torch.Tensor:
    return torch.from_numpy(ndimage.gaussian_filter(mask.float().numpy(), sigma_voxels))


def _heart_scaling(labels: torch.Tensor, spacing: float, factor: float, falloff_mm: float):
    """Where each voxel near the heart reads from when the heart is scaled by ``factor``: ``(box, source)``, or
    ``None`` when nothing changes."""
    heart = labels == ORGANS["heart"]
    if abs(factor - 1.0) < 1e-3 or not heart.any():
        return None
    where = torch.nonzero(heart).float()
    centre = where.mean(0)
    semi_axes = (where.max(0).values - where.min(0).values) / 2 + 1
    reach = semi_axes + falloff_mm * 1.2 / spacing
    box = tuple(slice(max(int(c - r), 0), min(int(c + r) + 1, s)) for c, r, s in zip(centre, reach, heart.shape))
    points = _voxel_grid(box)
    # 1 inside the heart's ellipsoid, falling smoothly to 0 over falloff_mm beyond it
    radius = ((points - centre) / semi_axes).norm(dim=-1)
    beyond = (radius - 1).clamp(min=0) * semi_axes.mean() * spacing
    weight = (1 - beyond / falloff_mm).clamp(0, 1)
    weight = weight * weight * (3 - 2 * weight)  # smoothstep
    scale = torch.tensor([factor**0.5, factor, factor])
    return box, centre + (points - centre) / (1 + (scale - 1) * weight[..., None])


def scaled_heart_labels(labels: torch.Tensor, spacing: float, factor: float, falloff_mm: float = 30.0) -> torch.Tensor:
    """A copy of ``labels`` with the heart scaled as :func:`scale_heart` would (to measure its effect cheaply)."""
    mapping = _heart_scaling(labels, spacing, factor, falloff_mm)
    if mapping is None:
        return labels
    box, source = mapping
    labels = labels.clone()
    labels[box] = _resample([labels], source, ["nearest"])[0].round().to(labels.dtype)
    return labels


def scale_heart(ct: EditableCT, factor: float, falloff_mm: float = 30.0) -> None:
    """Scale the heart about its centre by ``factor`` (laterally and front to back; ``factor ** 0.5`` along ``z``),
    the surroundings following with a smooth fall-off over ``falloff_mm`` beyond the heart's ellipsoid (lungs give
    way or fill in)."""
    mapping = _heart_scaling(ct.labels, ct.spacing, factor, falloff_mm)
    if mapping is None:
        return
    box, source = mapping
    hu, labels = _resample([ct.hu, ct.labels], source, ["bilinear", "nearest"])
    ct.hu[box], ct.labels[box] = hu, labels.round().to(ct.labels.dtype)


def _pleural_space(rng: np.random.Generator, ct: EditableCT):
    """A free side's ``(side, lung mask, lung voxel indices (N, 3), top z, bottom z)``, or ``None`` when both pleural
    spaces already hold a finding."""
    free = [s for s in ("right", "left") if ("pleura", s) not in ct.occupied]
    if not free:
        return None
    side = free[int(rng.integers(len(free)))]
    lung = ct.lung(side)
    where = torch.nonzero(lung).float()
    return side, lung, where, where[:, 0].min(), where[:, 0].max()


def _effusion(ct: EditableCT, rng: np.random.Generator) -> InsertedFinding | None:
    space = _pleural_space(rng, ct)
    if space is None:
        return None
    side, lung, where, z_top, z_bottom = space
    x = where[:, 1]
    medial, lateral = (x.max(), x.min()) if side == "right" else (x.min(), x.max())
    height = z_bottom - z_top
    depth = float(rng.uniform(0.22, 0.5)) * height
    meniscus = float(rng.uniform(0.3, 0.7)) * depth
    y = where[:, 2]
    posterior, anterior = y.min(), y.max()
    zz = torch.arange(ct.hu.shape[0], dtype=torch.float32)[:, None, None]
    xx = torch.arange(ct.hu.shape[1], dtype=torch.float32)[None, :, None]
    yy = torch.arange(ct.hu.shape[2], dtype=torch.float32)[None, None, :]
    towards_wall = ((xx - medial) / (lateral - medial)).clamp(0, 1)
    towards_back = ((anterior - yy) / (anterior - posterior)).clamp(0, 1)
    # the surface climbs the lateral and the posterior chest wall (the meniscus); its edge is soft over ~6 mm
    level = z_bottom - depth - meniscus * towards_wall**2 - 0.5 * meniscus * towards_back**2
    weight = ((zz - level) / (6.0 / ct.spacing) + 0.5).clamp(0, 1) * lung
    fluid = weight > 0.5
    if not fluid.any():
        return None
    number = ct.next_number()
    ct.hu.copy_(torch.where(weight > 0, ct.hu * (1 - weight) + float(rng.uniform(8.0, 22.0)) * weight, ct.hu))
    ct.findings[fluid] = number
    ct.occupied.add(("pleura", side))
    size = "large" if depth / height > 0.42 else "moderate" if depth / height > 0.32 else "small"
    return InsertedFinding(
        "Pleural Effusion", number,
        f"{size.capitalize()} {side} pleural effusion with blunting of the costophrenic angle and a meniscus.",
        f"{size.capitalize()} {side} pleural effusion.", {"side": side, "size": size}, side=side,
    )  # fmt: skip


def _pneumothorax(ct: EditableCT, rng: np.random.Generator) -> InsertedFinding | None:
    space = _pleural_space(rng, ct)
    if space is None:
        return None
    side, lung, where, z_top, z_bottom = space
    z_hilum = z_top + 0.6 * (z_bottom - z_top)
    level = where[(where[:, 0] - z_hilum).abs() < 2]
    x_medial = where[:, 1].max() if side == "right" else where[:, 1].min()
    anchor = torch.tensor([float(z_bottom), float(x_medial), float(level[:, 2].mean())])
    collapse = float(rng.uniform(0.6, 0.85))
    # erect patient: the air rises, so the lung falls away from the apex and the lateral wall, towards the hilum and
    # the diaphragm (anchored at the base: z shrinks towards the bottom, x towards the medial edge)
    factors = torch.tensor([collapse**0.7, collapse, 1.0])
    box, collapsed, freed, hu, labels, findings = _collapse(ct, lung, anchor, factors)
    if not freed.any():
        return None
    number = ct.next_number()
    # the collapsed lung holds the same tissue in less volume; its edge (visceral pleura) shows as a thin line
    dense = torch.minimum(-1000.0 + (hu + 1000.0) / (collapse**2.5), hu.clamp(min=60.0))  # air goes, tissue stays
    edge = collapsed & ~torch.from_numpy(ndimage.binary_erosion(collapsed.numpy()))
    hu_box, findings_box = ct.hu[box], ct.findings[box]
    hu_box[collapsed] = dense[collapsed]
    findings_box[collapsed] = findings[collapsed]
    hu_box[freed] = -1000.0
    hu_box[edge & torch.from_numpy(ndimage.binary_dilation(freed.numpy()))] = -500.0
    findings_box[freed] = number
    ct.occupied.add(("pleura", side))
    size = "large" if collapse < 0.7 else "moderate" if collapse < 0.78 else "small"
    return InsertedFinding(
        "Pneumothorax", number,
        f"{size.capitalize()} {side} pneumothorax: a visceral pleural line with no lung markings beyond it.",
        f"{size.capitalize()} {side} pneumothorax.", {"side": side, "size": size, "collapse": round(collapse, 3)},
        rule="pneumothorax", side=side,
    )  # fmt: skip


def _free_lobe(ct: EditableCT, rng: np.random.Generator, weights: tuple[float, ...]) -> int | None:
    free = [i for i in range(len(LOBES)) if ("lobe", i) not in ct.occupied and ct.lobe(i).any()]
    if not free:
        return None
    p = np.array([weights[i] for i in free], np.float64)
    return free[int(rng.choice(len(free), p=p / p.sum()))]


def _consolidation(ct: EditableCT, rng: np.random.Generator) -> InsertedFinding | None:
    lobe = _free_lobe(ct, rng, (1.0, 0.7, 1.5, 1.0, 1.5))
    if lobe is None:
        return None
    region = ct.lobe(lobe)
    box = _box(region, 2, ct.hu.shape)
    local = region[box]
    whole = rng.random() < 0.3
    noise = _smooth_noise(rng, local.shape)
    threshold = torch.quantile(noise[local], float(rng.uniform(0.3, 0.75))) if not whole else -np.inf
    patch = local & (noise > threshold)
    weight = _soft(patch, 3.0 / ct.spacing) * local
    if not (weight > 0.5).any():
        return None
    number = ct.next_number()
    target = float(rng.uniform(-40.0, 40.0))
    hu_box = ct.hu[box]
    hu_box[local] = (hu_box * (1 - weight) + target * weight)[local]
    ct.findings[box][weight > 0.5] = number
    ct.occupied.add(("lobe", lobe))
    name = _LOBE_NAMES[lobe]
    extent = "Lobar" if whole else "Patchy"
    return InsertedFinding(
        "Consolidation", number, f"{extent} airspace consolidation in the {name}.",
        f"{name.capitalize()} consolidation.", {"side": _LOBE_SIDES[lobe], "lobe": name, "lobar": whole},
        side=_LOBE_SIDES[lobe],
    )  # fmt: skip


def _atelectasis(ct: EditableCT, rng: np.random.Generator) -> InsertedFinding | None:
    lobe = _free_lobe(ct, rng, (1.0, 0.8, 1.6, 0.8, 1.6))
    if lobe is None:
        return None
    region = ct.lobe(lobe)
    side = _LOBE_SIDES[lobe]
    lung = ct.lung(side)
    where = torch.nonzero(region).float()
    lung_x = torch.nonzero(lung)[:, 1].float()
    # the hilar point: the lobe's most medial part, at its centre in z and y
    medial = lung_x.max() if side == "right" else lung_x.min()
    x_hilum = where[:, 1].max() if side == "right" else where[:, 1].min()
    x_hilum = 0.5 * (x_hilum + medial)
    centre = torch.tensor([float(where[:, 0].mean()), float(x_hilum), float(where[:, 2].mean())])
    collapse = float(rng.uniform(0.45, 0.7))
    box, collapsed, _, hu, _, _ = _collapse(ct, region, centre, torch.tensor([collapse] * 3))
    if not collapsed.any():
        return None
    number = ct.next_number()
    airless = float(rng.uniform(0.75, 0.95))
    hu_box = ct.hu[box]
    hu_box[collapsed] = (hu * (1 - airless) + float(rng.uniform(0.0, 40.0)) * airless)[collapsed]
    ct.findings[box][collapsed] = number
    ct.occupied.add(("lobe", lobe))
    name = _LOBE_NAMES[lobe]
    return InsertedFinding(
        "Atelectasis", number, f"Volume loss and opacification of the {name}, in keeping with lobar atelectasis.",
        f"{name.capitalize()} atelectasis.", {"side": side, "lobe": name, "collapse": round(collapse, 3)}, side=side,
    )  # fmt: skip


def _lesion(name: str, diameters: tuple[float, float]) -> Callable:
    def insert(ct: EditableCT, rng: np.random.Generator) -> InsertedFinding | None:
        diameter = float(rng.uniform(*diameters))
        radius = diameter / 2 / ct.spacing
        lungs = (ct.labels >= 1) & (ct.labels <= 5) & (ct.findings == 0)
        # inside the lung, the centre at least a third of the radius from its surface
        inner = ndimage.binary_erosion(lungs.numpy(), iterations=max(1, int(radius / 3)))
        candidates = np.argwhere(inner)
        if len(candidates) == 0:
            return None
        centre = torch.from_numpy(candidates[int(rng.integers(len(candidates)))]).float()
        margin = int(np.ceil(radius * 1.4)) + 2
        box = tuple(slice(max(int(c) - margin, 0), min(int(c) + margin + 1, s)) for c, s in zip(centre, ct.hu.shape))
        points = _voxel_grid(box)
        distance = (points - centre).norm(dim=-1)
        lobulated = radius * (1 + 0.18 * _smooth_noise(rng, distance.shape, knots=3))
        weight = torch.clamp(lobulated - distance + 0.5, 0.0, 1.0)  # partial volume at the edge
        number = ct.next_number()
        hu_box = ct.hu[box]
        hu_box.copy_(torch.maximum(hu_box, hu_box * (1 - weight) + float(rng.uniform(20.0, 50.0)) * weight))
        ct.findings[box][weight > 0.5] = number
        lobe_code = int(ct.labels[tuple(int(c) for c in centre)])
        lobe = _LOBE_NAMES[lobe_code - 1] if 1 <= lobe_code <= 5 else "lung"
        side = _LOBE_SIDES[lobe_code - 1] if 1 <= lobe_code <= 5 else None
        size = f"{diameter / 10:.1f} cm"
        what = "nodule" if name == "Nodule" else "mass"
        return InsertedFinding(
            name, number, f"A {size} {'well-circumscribed ' if what == 'nodule' else ''}{what} in the {lobe}.",
            f"{lobe.capitalize()} {'pulmonary nodule' if what == 'nodule' else 'mass'}.",
            {"side": side, "lobe": lobe, "diameter_mm": round(diameter, 1)}, side=side,
        )  # fmt: skip

    return insert


_INSERT: dict[str, Callable[[EditableCT, np.random.Generator], InsertedFinding | None]] = {
    "Atelectasis": _atelectasis,
    "Consolidation": _consolidation,
    "Nodule": _lesion("Nodule", (8.0, 28.0)),
    "Mass": _lesion("Mass", (32.0, 60.0)),
    "Pleural Effusion": _effusion,
    "Pneumothorax": _pneumothorax,
}
# lobe-level changes first, free pleural air last (it collapses whatever the lung already holds)
INSERTION_ORDER = ("Atelectasis", "Consolidation", "Nodule", "Mass", "Pleural Effusion", "Pneumothorax")


def insert_finding(name: str, ct: EditableCT, rng: np.random.Generator) -> InsertedFinding | None:
    """Insert one finding of :data:`SIMULATED_FINDINGS` (not Cardiomegaly: see :func:`scale_heart`); ``None`` when
    there is no room for it (e.g. both pleural spaces already hold a finding)."""
    return _INSERT[name](ct, rng)
