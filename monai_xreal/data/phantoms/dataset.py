# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Phantoms as a MONAI dataset (made on the fly) and as files with a MONAI datalist (``{"training", "validation"}``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from monai.data import Dataset
from tqdm.auto import tqdm

from monai_xreal.data.phantoms.generator import Phantom, PhantomGenerator
from monai_xreal.errors import XRealInputError
from monai_xreal.io.writers import FORMATS, save_images, staged_output
from monai_xreal.transforms.prompts import BuildPrompt

__all__ = ["PhantomDataset", "phantom_item", "write_phantom_set", "PHANTOM_FOLDERS"]

PHANTOM_FOLDERS = ("images", "anatomy", "pathology")


def phantom_item(phantom: Phantom, name: str, per_finding: bool = True) -> dict:
    """The non-image fields of a datalist item, with the adapters' keys: ``id``, ``labels``, ``report`` and, with
    ``per_finding``, ``boxes``, ``box_labels`` and ``details`` (one entry per finding, so they vary in length)."""
    item = {"id": name, "labels": phantom.labels, "report": phantom.report}
    if per_finding:
        item.update(boxes=phantom.boxes.tolist(), box_labels=phantom.box_labels, details=phantom.details)
    return item


class PhantomDataset(Dataset):
    """``num`` phantoms made when indexed (no files), as data dicts with ``image``, ``anatomy``, ``pathology``
    (``(1, X, Y)`` numpy arrays in MONAI order) and the fields of :func:`phantom_item`.

    Args:
        num: number of phantoms.
        transform: MONAI transform applied to each dict.
        per_finding: include the per-finding fields; they vary in length, so the default batching cannot stack them.
        **generator_args: :class:`PhantomGenerator` arguments (``size``, ``seed``, ``probabilities``, ...).
    """

    def __init__(
        self, num: int, transform: Callable | None = None, per_finding: bool = False, **generator_args
    ) -> None:
        self.generator = PhantomGenerator(**generator_args)
        self.per_finding = per_finding
        super().__init__(data=list(range(int(num))), transform=transform)

    def _transform(self, index: int):
        phantom = self.generator(self.data[index])
        item = {"image": phantom.image, "anatomy": phantom.anatomy, "pathology": phantom.pathology}
        item.update(phantom_item(phantom, f"phantom_{self.data[index]:05d}", self.per_finding))
        return item if self.transform is None else self.transform(item)


def write_phantom_set(
    output_dir: str | Path,
    num: int,
    size: int = 128,
    seed: int = 0,
    fmt: str = "png",
    validation_fraction: float = 0.1,
    probabilities: Mapping[str, float] | None = None,
    progress: bool = False,
    **generator_args,
) -> Path:
    """Write ``num`` phantoms and their datalist; returns the datalist's path.

    Layout: ``images/``, ``anatomy/`` and ``pathology/`` hold ``phantom_<index>.<png|nii.gz>`` (image in [0, 1]
    as 8-bit PNG or float NIfTI; label map and mask as their uint8 values), and ``datalist.json`` is MONAI's
    ``{"training": [...], "validation": [...]}`` with paths relative to it (``load_decathlon_datalist`` resolves
    them). The last ``validation_fraction`` of the indices are the validation set; ``conditions.json`` holds
    their conditions (:func:`monai_xreal.data.load_conditions`: anatomy, the pathology mask where there is a
    finding region, the labels' prompt, seed = phantom index), so a generator can be evaluated against them. All
    files appear together, or none if the run fails.

    Raises:
        XRealInputError: bad arguments, or ``output_dir`` already holding a phantom set.
    """
    if num < 1:
        raise XRealInputError("num", f"must be a positive integer, got {num}")
    if fmt not in FORMATS:
        raise XRealInputError("format", f"must be one of {sorted(FORMATS)}, got {fmt!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise XRealInputError("validation_fraction", f"must lie in [0, 1), got {validation_fraction}")
    output_dir = Path(output_dir)
    existing = [name for name in (*PHANTOM_FOLDERS, "datalist.json", "conditions.json") if (output_dir / name).exists()]
    if existing:
        raise XRealInputError(str(output_dir), f"already holds {existing}; choose a new or empty folder")
    generator = PhantomGenerator(size=size, seed=seed, probabilities=probabilities, **generator_args)
    num_validation = int(round(validation_fraction * num))
    ext = FORMATS[fmt]
    items, has_region = [], []
    with staged_output(output_dir) as staging:
        for index in tqdm(range(num), desc="phantoms", unit="img", disable=not progress):
            phantom = generator(index)
            name = f"phantom_{index:05d}"
            save_images(phantom.image[None], [name], staging / "images", fmt)
            save_images(phantom.anatomy[None], [name], staging / "anatomy", fmt, labels=True)
            save_images(phantom.pathology[None], [name], staging / "pathology", fmt, labels=True)
            files = {
                key: f"{folder}/{name}{ext}" for key, folder in zip(("image", "anatomy", "pathology"), PHANTOM_FOLDERS)
            }
            items.append({**files, **phantom_item(phantom, name)})
            has_region.append(bool(phantom.pathology.any()))
        datalist = {
            "description": f"monai_xreal phantoms: {num} at {size}x{size}, seed {seed}",
            "size": [size, size],
            "training": items[: num - num_validation],
            "validation": items[num - num_validation :],
        }
        (staging / "datalist.json").write_text(json.dumps(datalist, indent=1, default=_json_number))
        first = num - num_validation
        conditions = [
            _condition(item, has_region[first + i], first + i) for i, item in enumerate(datalist["validation"])
        ]
        if conditions:
            (staging / "conditions.json").write_text(json.dumps({"conditions": conditions}, indent=1))
    return output_dir / "datalist.json"


def _condition(item: dict, has_region: bool, seed: int) -> dict:
    # without a finding region (e.g. "No Finding") the prompt conditions the anatomy stage
    condition = {"id": item["id"], "anatomy": item["anatomy"], "prompt": BuildPrompt()(item["labels"]), "seed": seed}
    return {**condition, "pathology": item["pathology"]} if has_region else condition


def _json_number(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
