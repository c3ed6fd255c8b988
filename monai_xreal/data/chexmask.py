# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""CheXmask (Gaggion et al., PhysioNet): lung and heart masks as run-length encodings, one CSV per source dataset.

Each table (``MIMIC-CXR-JPG.csv``, ``CheXpert.csv``, ``ChestX-Ray8.csv``, ``VinDr-CXR.csv``, ``Padchest.csv``,
``CANDID-PTX.csv``, plain or ``.gz``) has an image id column whose name depends on the source dataset, then
``Dice RCA (Mean)``, ``Dice RCA (Max)``, ``Landmarks``, ``Left Lung``, ``Right Lung``, ``Heart``, ``Height``, ``Width``.
An encoding is ``start length start length ...`` with 1-based absolute starts over the ``(Height, Width)`` mask
flattened row by row (C order), as in CheXmask's own ``get_mask_from_RLE``. "Right Lung" is the patient's right
lung, which lies on the image's left in these (PA/AP, standard display) images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai_xreal.data.images import find_image
from monai_xreal.data.skips import RowSkips
from monai_xreal.data.tables import read_header, read_rows, row_float
from monai_xreal.errors import XRealInputError
from monai_xreal.transforms.rle import RLEToMask

__all__ = ["CHEXMASK_ID_COLUMNS", "CHEXMASK_STRUCTURES", "chexmask_datalist"]

logger = logging.getLogger(__name__)

# id column per source table, as in CheXmask's published tables
CHEXMASK_ID_COLUMNS = ("dicom_id", "Path", "Image Index", "ImageID", "image_id")
# CheXmask column -> the key used in ``anatomy_rle`` (and by ``AnatomyRLEToLabelMap``)
CHEXMASK_STRUCTURES = {"Right Lung": "right_lung", "Left Lung": "left_lung", "Heart": "heart"}
DICE_COLUMN = "Dice RCA (Mean)"
IMAGE_EXTENSIONS = ("", ".jpg", ".png", ".dcm", ".dicom")


def _id_column(path: Path, id_column: str | None) -> str:
    if id_column is not None:
        return id_column
    if not path.is_file():
        raise XRealInputError(str(path), "no such file")
    header = read_header(path)
    found = [column for column in CHEXMASK_ID_COLUMNS if column in header]
    if len(found) != 1:
        what = "no" if not found else f"several ({found})"
        raise XRealInputError(
            str(path), f"{what} image id column among {list(CHEXMASK_ID_COLUMNS)}; pass id_column (header: {header})"
        )
    return found[0]


def _size(row: dict[str, str], path: Path, line: int) -> tuple[int, int]:
    """``(Width, Height)``: MONAI's ``(X, Y)``."""
    size = []
    for column in ("Width", "Height"):
        value = row_float(row.get(column, ""), path, line, column)
        if value != int(value) or value < 1:
            raise XRealInputError(f"{path}:{line}", f"column {column!r} is not a positive whole number: {value}")
        size.append(int(value))
    return size[0], size[1]


class _ImageFinder:
    """``image_dir/<id><ext>``, or else the one file of that name (or stem) anywhere under ``image_dir``.

    The fallback serves nested layouts such as MIMIC-CXR-JPG's ``files/p10/p10000032/s5.../<dicom_id>.jpg``; the
    folder is walked once, on the first id not found directly.
    """

    def __init__(self, image_dir: str | Path | None) -> None:
        self.image_dir, self.index = image_dir, None

    def __call__(self, name: str) -> str | None:
        try:
            return find_image(self.image_dir, name, IMAGE_EXTENSIONS)
        except XRealInputError:
            if "/" in name:
                raise
        if self.index is None:
            self.index = {}
            for folder, _, files in os.walk(str(self.image_dir)):
                for file in files:
                    for key in {file, os.path.splitext(file)[0]}:
                        self.index.setdefault(key, []).append(os.path.join(folder, file))
        paths = self.index.get(name, [])
        if len(paths) != 1:
            problem = "no image file" if not paths else f"{len(paths)} image files ({paths[:2]}...) for"
            raise XRealInputError(name, f"{problem} {name} under {self.image_dir}")
        return paths[0]


def chexmask_datalist(
    chexmask_csv: str | Path,
    image_dir: str | Path | None = None,
    id_column: str | None = None,
    min_dice: float | None = None,
    skip_invalid: bool = False,
) -> list[dict]:
    """One data dict per image of a CheXmask table.

    Each dict has ``id``, ``anatomy_rle`` (``{"right_lung": rle, "left_lung": rle, "heart": rle}``, the patient's
    right lung being on the image's left), ``spatial_size`` ``(X, Y) = (Width, Height)`` in MONAI's order,
    ``dice_rca`` (the ``Dice RCA (Mean)`` quality estimate, ``None`` without that column) and, with ``image_dir``,
    ``image``: ``image_dir/<id>`` (with or without an extension among .jpg, .png, .dcm, .dicom), else the one file
    of that name anywhere under ``image_dir``. Decode with
    ``AnatomyRLEToLabelMapd("anatomy_rle", "spatial_size", output_key="anatomy", image_key="image")``.

    Args:
        chexmask_csv: a CheXmask table, ``.csv`` or ``.csv.gz``.
        image_dir: the source dataset's image folder (optional).
        id_column: the image id column; by default the one of ``CHEXMASK_ID_COLUMNS`` the header has.
        min_dice: keep only images whose ``Dice RCA (Mean)`` (CheXmask's reverse-classification-accuracy estimate
            of the segmentation's Dice, in [0, 1]; no ground truth involved) is at least this. Filtered images are
            logged, not counted as bad rows.
        skip_invalid: skip bad rows (counted and logged) instead of stopping at the first.

    Every encoding is checked while reading: a malformed one, a size that is not a positive whole number, a
    repeated id or a missing image is an error naming the file and row (or the image), or, with ``skip_invalid``,
    drops that image.
    """
    path = Path(chexmask_csv)
    id_column = _id_column(path, id_column)
    required = [id_column, *CHEXMASK_STRUCTURES, "Height", "Width"] + ([DICE_COLUMN] if min_dice is not None else [])
    skips = RowSkips(str(path), skip_invalid)
    find = _ImageFinder(image_dir)
    items: dict[str, dict] = {}
    seen: set[str] = set()
    filtered = 0
    for line, _, row in read_rows(path, required):
        image_id = row.get(id_column, "")
        try:
            if not image_id:
                raise XRealInputError(f"{path}:{line}", f"empty {id_column!r}")
            if image_id in seen:
                raise XRealInputError(f"{path}:{line}", f"{image_id}: repeated id")
            seen.add(image_id)
            size = _size(row, path, line)
            dice = row_float(row[DICE_COLUMN], path, line, DICE_COLUMN) if row.get(DICE_COLUMN) else None
            if min_dice is not None and dice is None:
                raise XRealInputError(f"{path}:{line}", f"{image_id}: no {DICE_COLUMN!r} to filter by")
            encodings = {}
            for column, key in CHEXMASK_STRUCTURES.items():
                encoding = row.get(column, "")
                try:
                    RLEToMask(size, relative=False, argument=column, row_major=True).runs(encoding)
                except XRealInputError as err:
                    raise XRealInputError(f"{path}:{line}", f"{image_id}: {column}: {err.message}") from err
                encodings[key] = encoding
        except XRealInputError as err:
            items.pop(image_id, None)  # a repeated id drops the image
            skips.handle(err)
            continue
        if min_dice is not None and dice < min_dice:  # type: ignore[operator]
            filtered += 1
            continue
        items[image_id] = {"id": image_id, "anatomy_rle": encodings, "spatial_size": size, "dice_rca": dice}
    if filtered:
        logger.info("%s: %d image(s) below %s %s left out", path, filtered, DICE_COLUMN, min_dice)
    result = []
    for image_id, item in items.items():
        try:
            image = find(image_id)
        except XRealInputError as err:
            skips.handle(err)
            continue
        result.append(item if image is None else {**item, "image": image})
    skips.report()
    return result
