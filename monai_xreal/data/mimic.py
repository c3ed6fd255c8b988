# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MIMIC-CXR-JPG (2.0.0 / 2.1.0): images, views, splits, CheXpert (or NegBio) labels and, optionally, reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from monai_xreal.data.skips import RowSkips
from monai_xreal.data.tables import read_rows, row_float
from monai_xreal.errors import XRealInputError
from monai_xreal.text.demographics import MAX_AGE, Demographics, frontal_or_lateral
from monai_xreal.text.reports import report_sections

__all__ = ["CHEXPERT_CLASSES", "MISSING_POLICIES", "UNCERTAIN_POLICIES", "chexpert_labels", "mimic_cxr_datalist",
           "mimic_cxr_path"]  # fmt: skip

CHEXPERT_CLASSES = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)  # fmt: skip
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
MISSING_POLICIES = ("zeros", "ignore")
_IGNORE = None  # a class value that drops the class from the labels dict


def mimic_cxr_path(subject_id: str, study_id: str, dicom_id: str | None = None) -> str:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg``, or the study's report ``files/p10/p10000032/s50414267.txt``."""
    study = f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}"
    return f"{study}.txt" if dicom_id is None else f"{study}/{dicom_id}.jpg"


def _table(root: Path, name: str, required: bool = True, folder: str = "MIMIC-CXR-JPG") -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise XRealInputError(str(root), f"no {name} (or {name}.gz) in the {folder} folder")
    return None


def _check_cells(row: dict[str, str], columns: Sequence[str], where: str) -> None:
    short = [column for column in columns if column not in row]
    if short:
        raise XRealInputError(where, f"the row has no cell for column(s) {short}")


def chexpert_labels(row: dict[str, str], path: Path, line: int, uncertain: str, missing: str) -> dict[str, int]:
    """A CheXpert-labeler row (MIMIC-CXR's label tables, CheXpert's own ``train.csv``) as ``{class: 0 or 1}`` under
    the ``uncertain`` and ``missing`` policies (see :func:`mimic_cxr_datalist`).

    Raises:
        XRealInputError: a missing cell or a value other than 1 / 0 / -1 / empty (naming the file and line).
    """
    where = f"{path}:{line}"
    _check_cells(row, CHEXPERT_CLASSES, where)
    policy = {1.0: 1, 0.0: 0, -1.0: {"zeros": 0, "ones": 1, "ignore": _IGNORE}[uncertain]}
    not_mentioned = 0 if missing == "zeros" else _IGNORE
    values = {}
    for name in CHEXPERT_CLASSES:
        cell = row[name]
        # pandas writes NaN as an empty cell (some exports spell it out): the labeler found no mention
        if cell.lower() in ("", "nan"):
            value = not_mentioned
        else:
            number = row_float(cell, path, line, name)
            if number not in policy:
                raise XRealInputError(where, f"column {name!r} holds {cell!r}; expected 1, 0, -1 or empty")
            value = policy[number]
        if value is not _IGNORE:
            values[name] = value
    return values


def _read_labels(path: Path, uncertain: str, missing: str, skips: RowSkips) -> tuple[dict[str, dict], set[str]]:
    """Study id -> labels; and the studies whose label row was bad (skipped), whose images are then left out."""
    labels: dict[str, dict] = {}
    bad: set[str] = set()
    for line, _, row in read_rows(path, ["study_id", *CHEXPERT_CLASSES]):
        where, study = f"{path}:{line}", row["study_id"]
        try:
            if study in labels or study in bad:
                raise XRealInputError(where, f"study {study} has a second label row")
            labels[study] = chexpert_labels(row, path, line, uncertain, missing)
        except XRealInputError as err:
            bad.add(study)
            skips.handle(err)
    return labels, bad


def mimic_cxr_datalist(
    root: str | Path,
    split: str | None = None,
    views: Sequence[str] | None = ("PA", "AP"),
    uncertain: str = "zeros",
    missing: str = "zeros",
    labeler: str = "chexpert",
    reports_root: str | Path | None = None,
    require_images: bool = True,
    skip_invalid: bool = False,
    patients_root: str | Path | None = None,
) -> list[dict]:
    """One data dict per image of a MIMIC-CXR-JPG folder, in the order of the metadata table.

    ``root`` holds ``files/`` and the ``mimic-cxr-2.0.0-{metadata,chexpert,split}.csv[.gz]`` tables (2.1.0 keeps
    those names). Keys: ``id`` (dicom_id), ``subject_id``, ``study_id``, ``image`` (the .jpg path), ``view``
    (ViewPosition, ``""`` when the DICOM had none), ``split`` (train / validate / test, ``""`` without a split
    table), ``labels`` (``{class: 0 or 1}`` over :data:`CHEXPERT_CLASSES`), ``spatial_size`` (``(Columns, Rows)``:
    the shape ``LoadImage`` gives, image x first) when the metadata has it, and ``report`` (sections, see
    :func:`~monai_xreal.text.reports.report_sections`; always ``findings`` and ``impression``) when found.

    Args:
        split: keep one split (needs the split table); ``None`` keeps all.
        views: ViewPosition values to keep (``"LATERAL"``, ``"LL"``, ``""`` for none, ...); ``None`` keeps all.
        uncertain: what a ``-1.0`` (uncertain mention) becomes: ``"zeros"`` (U-Zeros, the default), ``"ones"``
            (U-Ones), or ``"ignore"``, which leaves the class out of that image's ``labels``.
        missing: what an empty cell (not mentioned) becomes: ``"zeros"`` (negative, the default, as XReal and
            Cheff treat it) or ``"ignore"``. A study without a label row is all-missing under this policy.
        labeler: ``"chexpert"`` or ``"negbio"``: which label table (same columns) to read.
        reports_root: the folder holding ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` (the mimic-cxr-reports archive);
            then a missing report is an error. Without it, reports are looked for in ``root`` and added if present.
        require_images: check that each .jpg exists (a missing one is an error, or a skip with ``skip_invalid``).
        skip_invalid: skip bad rows, unreadable label rows (their study's images) and missing files instead of
            stopping; the count and first reason are logged at the end.
        patients_root: MIMIC-IV's ``hosp`` folder (``patients.csv[.gz]``: ``gender``, ``anchor_age``,
            ``anchor_year``; ``admissions.csv[.gz]``: ``race``, optional). Then each item gets ``demographics``
            (:class:`~monai_xreal.text.demographics.Demographics`): sex, the age at the study (``anchor_age`` plus
            the years from ``anchor_year`` to the StudyDate, both on MIMIC's shifted calendar; 91 stands for 91 and
            over), the subject's most frequent race over its admissions, and the view.

    Raises:
        XRealInputError: a missing table or column, a label other than 1 / 0 / -1 / empty, a non-numeric id (all
            naming the file and row), a missing image or report, or an unknown policy, split or labeler.
    """
    root = Path(root)
    for argument, value, allowed in (
        ("uncertain", uncertain, UNCERTAIN_POLICIES), ("missing", missing, MISSING_POLICIES),
        ("split", split, (None, "train", "validate", "test")), ("labeler", labeler, ("chexpert", "negbio")),
    ):  # fmt: skip
        if value not in allowed:
            raise XRealInputError(argument, f"{value!r} is not one of {list(allowed)}")
    metadata = _table(root, "mimic-cxr-2.0.0-metadata.csv")
    label_table = _table(root, f"mimic-cxr-2.0.0-{labeler}.csv")
    split_table = _table(root, "mimic-cxr-2.0.0-split.csv", required=split is not None)
    if isinstance(views, str):
        views = [views]
    keep_views = None if views is None else {view.strip().upper() for view in views}
    skips = RowSkips(str(root), skip_invalid)

    splits = {}
    if split_table is not None:
        splits = {row["dicom_id"]: row.get("split", "") for _, _, row in read_rows(split_table, ["dicom_id", "split"])}
    labels, bad_studies = _read_labels(label_table, uncertain, missing, skips)
    no_row = {} if missing == "ignore" else dict.fromkeys(CHEXPERT_CLASSES, 0)
    report_dir = None if reports_root is None else Path(reports_root)
    if report_dir is not None and report_dir.name == "files":  # accept the archive's folder or its files/ itself
        report_dir = report_dir.parent
    reports: dict[str, dict | None] = {}

    patients = None if patients_root is None else _patients(Path(patients_root))
    columns = ["dicom_id", "subject_id", "study_id", "ViewPosition"]
    result = []
    for line, _, row in read_rows(metadata, columns):
        where = f"{metadata}:{line}"
        try:
            _check_cells(row, columns, where)
        except XRealInputError as err:
            skips.handle(err)
            continue
        dicom_id, subject, study, view = (row[column] for column in columns)
        if keep_views is not None and view.upper() not in keep_views:
            continue
        if (split is not None and splits.get(dicom_id) != split) or study in bad_studies:
            continue
        try:
            if not (subject.isdigit() and study.isdigit()):
                raise XRealInputError(where, f"subject_id {subject!r} / study_id {study!r} are not numbers")
            item = {
                "id": dicom_id, "subject_id": subject, "study_id": study,
                "image": str(root / mimic_cxr_path(subject, study, dicom_id)), "view": view,
                "split": splits.get(dicom_id, ""), "labels": dict(labels.get(study, no_row)),
            }  # fmt: skip
            if row.get("Rows") and row.get("Columns"):
                size = [row_float(row[c], metadata, line, c) for c in ("Columns", "Rows")]
                item["spatial_size"] = (int(size[0]), int(size[1]))
            if require_images and not Path(item["image"]).is_file():
                raise XRealInputError(dicom_id, f"no image file {item['image']}")
            if study not in reports:
                reports[study] = _report(report_dir or root, subject, study, required=report_dir is not None)
        except XRealInputError as err:
            skips.handle(err)
            continue
        if reports[study] is not None:
            item["report"] = dict(reports[study])
        if patients is not None:
            try:
                demographics = _demographics(patients.get(subject), view, row.get("StudyDate", ""), where)
            except XRealInputError as err:
                skips.handle(err)
                continue
            if demographics:
                item["demographics"] = demographics
        result.append(item)
    skips.report()
    return result


def _patients(hosp: Path) -> dict[str, dict]:
    """``subject_id -> {sex, anchor_age, anchor_year, race}`` from MIMIC-IV's ``hosp`` tables."""
    patients_table = _table(hosp, "patients.csv", folder="MIMIC-IV hosp")
    patients = {}
    for line, _, row in read_rows(patients_table, ["subject_id", "gender", "anchor_age", "anchor_year"]):
        patients[row["subject_id"]] = {
            "sex": row["gender"], "anchor_age": row_float(row["anchor_age"], patients_table, line, "anchor_age"),
            "anchor_year": row_float(row["anchor_year"], patients_table, line, "anchor_year"),
        }  # fmt: skip
    admissions = _table(hosp, "admissions.csv", required=False, folder="MIMIC-IV hosp")
    if admissions is not None:
        races: dict[str, Counter] = {}
        for line, _, row in read_rows(admissions, ["subject_id", "race"]):
            # counted as categories, unknowns left out: "WHITE - RUSSIAN" and "WHITE" are one group
            known = Demographics.from_mapping({"race": row["race"]}, f"{admissions}:{line} race")
            if known is not None:
                races.setdefault(row["subject_id"], Counter())[known.race] += 1
        for subject, counts in races.items():
            if subject in patients:
                patients[subject]["race"] = counts.most_common(1)[0][0]
    return patients


def _demographics(patient: dict | None, view: str, study_date: str, where: str) -> dict:
    """An item's checked demographics (unknown values left out)."""
    values = {"view": frontal_or_lateral(view)}
    if patient is not None:
        age = patient["anchor_age"]
        if len(study_date) >= 4 and study_date[:4].isdigit():
            age += int(study_date[:4]) - patient["anchor_year"]
        values.update(sex=patient["sex"], age=int(min(max(age, 0), MAX_AGE)), race=patient.get("race"))
    demographics = Demographics.from_mapping(values, f"{where} demographics")
    return {} if demographics is None else demographics.as_dict()


def _report(root: Path, subject: str, study: str, required: bool) -> dict[str, str] | None:
    path = root / mimic_cxr_path(subject, study)
    if not path.is_file():
        if required:
            raise XRealInputError(f"s{study}", f"no report file {path}")
        return None
    return report_sections(path.read_text(encoding="utf-8", errors="replace"))
