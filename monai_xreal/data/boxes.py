# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Box tables: NIH ChestX-ray14 (``Bbox [x,y,w,h]``) and VinDr-CXR (``train.csv``, one row per radiologist box).

A bad row is an error naming the file and row; with ``skip_invalid`` it drops its whole image (counted once per bad
row), as for SIIM: an image with one of its boxes missing would give a silently wrong pathology mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from monai_xreal.data.images import find_image
from monai_xreal.data.skips import RowSkips
from monai_xreal.data.tables import read_rows, row_float
from monai_xreal.errors import XRealInputError

__all__ = ["NIH_BOX_CLASSES", "VINDR_CLASSES", "nih_boxes_datalist", "vindr_boxes_datalist"]

NIH_BOX_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
VINDR_CLASSES = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis",
)  # fmt: skip
VINDR_NO_FINDING = "No finding"


def _finish(items: dict[str, dict], bad: set[str], image_dir, extensions, skips: RowSkips) -> list[dict]:
    result = []
    for image_id, item in items.items():
        if image_id in bad:
            continue
        try:
            image = find_image(image_dir, item["id"], extensions)
        except XRealInputError as err:
            skips.handle(err)
            continue
        boxes = item.pop("_boxes")
        item["boxes"] = np.asarray(boxes, np.float32).reshape(-1, 4)
        item["labels"] = {name: 1 for name in dict.fromkeys(item["box_labels"])}
        result.append(item if image is None else {**item, "image": image})
    skips.report()
    return result


def nih_boxes_datalist(
    bbox_csv: str | Path, image_dir: str | Path | None = None, skip_invalid: bool = False
) -> list[dict]:
    """One data dict per image of NIH's ``BBox_List_2017.csv``.

    Keys: ``id`` (``Image Index``), ``boxes`` ``(N, 4)`` float as ``(x_min, y_min, x_max, y_max)`` pixels of the
    1024 x 1024 image (MONAI's box order for ``LoadImage``'d arrays), ``box_labels`` (class per box), ``labels``
    (``{class: 1}``), and ``image`` with ``image_dir``. Masks: ``BoxesToMaskd("boxes", (1024, 1024), "pathology")``.
    With ``skip_invalid`` a bad row drops its whole image.
    """
    skips = RowSkips(str(bbox_csv), skip_invalid)
    items: dict[str, dict] = {}
    bad: set[str] = set()
    # the header's "Bbox [x,y,w,h]" is itself split by the commas, so x, y, w, h are read by position (cells 3-6)
    for line, cells, row in read_rows(bbox_csv, ["Image Index", "Finding Label"]):
        where = f"{bbox_csv}:{line}"
        try:
            label = row.get("Finding Label")
            if label not in NIH_BOX_CLASSES:
                raise XRealInputError(where, f"unknown class {label!r}; known: {list(NIH_BOX_CLASSES)}")
            if len(cells) < 6:
                raise XRealInputError(where, f"expected x, y, w, h in columns 3-6, got {cells[2:]}")
            x, y, w, h = (row_float(cells[i], bbox_csv, line, "Bbox [x,y,w,h]") for i in range(2, 6))
            if w <= 0 or h <= 0:
                raise XRealInputError(where, f"box with non-positive size {w} x {h}")
        except XRealInputError as err:
            skips.handle(err)
            bad.add(row["Image Index"])
            continue
        item = items.setdefault(row["Image Index"], {"id": row["Image Index"], "_boxes": [], "box_labels": []})
        item["_boxes"].append((x, y, x + w, y + h))
        item["box_labels"].append(row["Finding Label"])
    return _finish(items, bad, image_dir, ("",), skips)


def vindr_boxes_datalist(
    train_csv: str | Path,
    image_dir: str | Path | None = None,
    rad_ids: Iterable[str] | None = None,
    skip_invalid: bool = False,
) -> list[dict]:
    """One data dict per image of VinDr-CXR's ``train.csv`` (boxes of every radiologist, or of ``rad_ids``).

    Keys: ``id``, ``boxes`` ``(N, 4)`` as ``(x_min, y_min, x_max, y_max)``, ``box_labels``, ``rad_ids`` (per box),
    ``labels`` (``{class: 1}`` for every class any kept radiologist boxed; empty for "No finding"), and ``image``
    (``<image_id>.dicom``) with ``image_dir``. "No finding" rows carry no box. With ``skip_invalid`` a bad row (of a
    kept radiologist) drops its whole image.
    """
    keep = None if rad_ids is None else set(rad_ids)
    skips = RowSkips(str(train_csv), skip_invalid)
    items: dict[str, dict] = {}
    bad: set[str] = set()
    columns = ["image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max"]
    for line, _, row in read_rows(train_csv, columns):
        if keep is not None and row["rad_id"] not in keep:
            continue
        item = items.setdefault(row["image_id"], {"id": row["image_id"], "_boxes": [], "box_labels": [], "rad_ids": []})
        where = f"{train_csv}:{line}"
        try:
            if row["class_name"] == VINDR_NO_FINDING:
                continue
            if row["class_name"] not in VINDR_CLASSES:
                raise XRealInputError(where, f"unknown class {row['class_name']!r}; known: {list(VINDR_CLASSES)}")
            box = [row_float(row.get(c, ""), train_csv, line, c) for c in ("x_min", "y_min", "x_max", "y_max")]
            if box[2] <= box[0] or box[3] <= box[1]:
                raise XRealInputError(where, f"box {box} has max <= min")
        except XRealInputError as err:
            skips.handle(err)
            bad.add(row["image_id"])
            continue
        item["_boxes"].append(box)
        item["box_labels"].append(row["class_name"])
        item["rad_ids"].append(row["rad_id"])
    return _finish(items, bad, image_dir, (".dicom", ".dcm", ".png"), skips)
