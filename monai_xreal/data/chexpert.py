# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""CheXpert (Stanford) as a MONAI datalist: labels, view and demographics per image.

``CheXpert-v1.0/train.csv`` (or ``valid.csv``) has ``Path``, ``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA`` and
the 14 CheXpert-labeler classes; the race of each patient is in the separately released demographics table
(``CHEXPERT DEMO``, read here as CSV with ``PATIENT`` and ``PRIMARY_RACE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai_xreal.data.mimic import MISSING_POLICIES, UNCERTAIN_POLICIES, chexpert_labels
from monai_xreal.data.skips import RowSkips
from monai_xreal.data.tables import read_rows
from monai_xreal.errors import XRealInputError
from monai_xreal.text.demographics import Demographics, frontal_or_lateral

__all__ = ["chexpert_datalist"]

_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


def chexpert_datalist(
    root: str | Path,
    table: str = "train.csv",
    demographics_table: str | Path | None = None,
    views: Sequence[str] | None = ("PA", "AP"),
    uncertain: str = "zeros",
    missing: str = "zeros",
    require_images: bool = True,
    skip_invalid: bool = False,
) -> list[dict]:
    """One data dict per image of a CheXpert-v1.0 folder, in the table's order.

    Keys: ``id`` (``patient00001_study1_view1_frontal``), ``patient``, ``image`` (the .jpg path), ``view`` (``PA``,
    ``AP``, ``lateral`` or ``""``), ``labels`` (``{class: 0 or 1}`` over the 14 classes, as
    :func:`~monai_xreal.data.mimic.mimic_cxr_datalist`'s) and ``demographics`` (sex, age, view and, with
    ``demographics_table``, race; unknown values left out).

    Args:
        root: the ``CheXpert-v1.0`` folder (the table's ``Path`` column starts with it).
        table: the table in ``root``: ``train.csv`` or ``valid.csv``.
        demographics_table: the demographics release as CSV (``PATIENT``, ``PRIMARY_RACE``), or ``None``.
        views: views to keep (of ``PA``, ``AP``, ``lateral``); ``None`` keeps all.
        uncertain, missing: the label policies of :func:`~monai_xreal.data.mimic.chexpert_labels`.
        require_images: check that each .jpg exists.
        skip_invalid: skip bad rows and missing files instead of stopping (counted and logged).

    Raises:
        XRealInputError: a missing table or column, a bad label or demographic value (naming file and row), a
            missing image, or an unknown policy.
    """
    root = Path(root)
    for argument, value, allowed in (("uncertain", uncertain, UNCERTAIN_POLICIES), ("missing", missing,
                                                                                     MISSING_POLICIES)):  # fmt: skip
        if value not in allowed:
            raise XRealInputError(argument, f"{value!r} is not one of {list(allowed)}")
    races = {}
    if demographics_table is not None:
        races = {row["PATIENT"]: row["PRIMARY_RACE"] for _, _, row in read_rows(demographics_table,
                                                                                ["PATIENT", "PRIMARY_RACE"])}  # fmt: skip
    if isinstance(views, str):
        views = [views]
    keep = None if views is None else {frontal_or_lateral(v) for v in views}
    skips = RowSkips(str(root), skip_invalid)
    path = root / table
    result = []
    for line, _, row in read_rows(path, list(_COLUMNS)):
        where = f"{path}:{line}"
        try:
            parts = Path(row["Path"]).parts
            relative = Path(*parts[1:]) if parts and parts[0] == root.name else Path(row["Path"])
            patient = next((p for p in relative.parts if p.startswith("patient")), "")
            view = (
                "lateral" if row["Frontal/Lateral"].strip().lower() == "lateral" else frontal_or_lateral(row["AP/PA"])
            )
            if keep is not None and view not in keep:
                continue
            demographics = Demographics.from_mapping(
                {"sex": row["Sex"], "age": row["Age"], "view": view, "race": races.get(patient)}, f"{where} demographics"
            )  # fmt: skip
            item = {
                "id": "_".join(relative.with_suffix("").parts[-3:]), "patient": patient, "image": str(root / relative),
                "view": view or "", "labels": chexpert_labels(row, path, line, uncertain, missing),
            }  # fmt: skip
            if demographics is not None:
                item["demographics"] = demographics.as_dict()
            if require_images and not Path(item["image"]).is_file():
                raise XRealInputError(item["id"], f"no image file {item['image']}")
        except XRealInputError as err:
            skips.handle(err)
            continue
        result.append(item)
    skips.report()
    return result
