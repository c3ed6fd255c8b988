# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""SIIM-ACR pneumothorax: ``ImageId, EncodedPixels`` run-length masks (``-1`` for none) on 1024 x 1024 DICOMs."""

from __future__ import annotations

from pathlib import Path

from monai_xreal.data.images import find_image
from monai_xreal.data.skips import RowSkips
from monai_xreal.data.tables import read_rows
from monai_xreal.errors import XRealInputError
from monai_xreal.transforms.rle import RLEToMask

__all__ = ["SIIM_SPATIAL_SIZE", "siim_pneumothorax_datalist"]

SIIM_SPATIAL_SIZE = (1024, 1024)


def siim_pneumothorax_datalist(
    rle_csv: str | Path, image_dir: str | Path | None = None, skip_invalid: bool = False
) -> list[dict]:
    """One data dict per image of the SIIM-ACR RLE table.

    Each dict has ``id``, ``pathology_rle`` (the image's encodings, one per pneumothorax component, empty for
    none), ``spatial_size`` (1024, 1024), ``labels`` (``{"Pneumothorax": 0 or 1}``) and, with ``image_dir``, the
    ``image`` path (``<ImageId>.dcm``). Decode the mask with
    ``RLEToMaskd("pathology_rle", "spatial_size", output_key="pathology", image_key="image")``.

    Every encoding is checked while reading: a malformed one is an error naming the file and row, or, with
    ``skip_invalid``, drops its image (counted and logged).
    """
    skips = RowSkips(str(rle_csv), skip_invalid)
    decoder = RLEToMask(SIIM_SPATIAL_SIZE)
    items: dict[str, dict] = {}
    bad: set[str] = set()
    for line, _, row in read_rows(rle_csv, ["ImageId", "EncodedPixels"]):
        image_id, encoding = row["ImageId"], row["EncodedPixels"]
        try:
            decoder.runs(encoding)
            item = items.setdefault(image_id, {"id": image_id, "pathology_rle": [], "spatial_size": SIIM_SPATIAL_SIZE})
            if encoding not in ("", "-1"):
                item["pathology_rle"].append(encoding)
        except XRealInputError as err:
            bad.add(image_id)
            skips.handle(XRealInputError(f"{rle_csv}:{line}", f"{image_id}: {err.message}"))
    result = []
    for image_id, item in items.items():
        if image_id in bad:
            continue
        try:
            image = find_image(image_dir, image_id, (".dcm", ".dicom", ".png"))
        except XRealInputError as err:
            skips.handle(err)
            continue
        item["labels"] = {"Pneumothorax": int(bool(item["pathology_rle"]))}
        result.append(item if image is None else {**item, "image": image})
    skips.report()
    return result
