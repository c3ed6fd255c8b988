# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from monai_xreal import XRealInputError
from monai_xreal.data.mimic import CHEXPERT_CLASSES, mimic_cxr_datalist, mimic_cxr_path
from monai_xreal.data.reports import report_sections

METADATA_HEADER = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,"
    "ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning"
)
# (dicom_id, subject, study, view, rows, columns, split)
IMAGES = [
    ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "PA", 12, 10, "train"),
    ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "LATERAL", 12, 10, "train"),
    ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000032", "53189527", "AP", 8, 6, "validate"),
    ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "10000764", "57375967", "AP", 8, 6, "test"),
    ("096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "10000898", "50771383", "", 8, 6, "train"),
]
CHEXPERT_HEADER = "subject_id,study_id," + ",".join(CHEXPERT_CLASSES)
# Atelectasis, Cardiomegaly, Consolidation, Edema, Enl. Cardiomed., Fracture, Lung Lesion, Lung Opacity,
# No Finding, Pleural Effusion, Pleural Other, Pneumonia, Pneumothorax, Support Devices
CHEXPERT_ROWS = [
    "10000032,50414267,,,,,,,,,1.0,,,,,",
    "10000032,53189527,,1.0,-1.0,1.0,,,,,,0.0,-1.0,,,1.0",
    # study 57375967 has no label row; 50771383 is labelled but its image has no view
    "10000898,50771383,1.0,,,,,,,,,,,,,",
]
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def write_jpeg(path: Path, rows: int, columns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(rows * columns).reshape(rows, columns) * 3 % 256).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture()
def mimic_root(tmp_path) -> Path:
    """A miniature MIMIC-CXR-JPG folder: gzipped metadata (as shipped), plain label and split tables, one report."""
    root = tmp_path / "mimic-cxr-jpg" / "2.0.0"
    metadata = [METADATA_HEADER]
    split = ["dicom_id,study_id,subject_id,split"]
    for dicom_id, subject, study, view, rows, columns, part in IMAGES:
        metadata.append(f"{dicom_id},{subject},{study},CHEST (PA AND LAT),{view},{rows},{columns},21800506,213014.531,"
                        "Chest 2 Views,postero-anterior,Erect")  # fmt: skip
        split.append(f"{dicom_id},{study},{subject},{part}")
        write_jpeg(root / mimic_cxr_path(subject, study, dicom_id), rows, columns)
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as handle:
        handle.write("\n".join(metadata) + "\n")
    (root / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(split) + "\n")
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text("\n".join([CHEXPERT_HEADER, *CHEXPERT_ROWS]) + "\n")
    (root / mimic_cxr_path("10000032", "50414267")).write_text(REPORT)
    return root


def test_paths_follow_the_real_layout():
    assert mimic_cxr_path("10000032", "50414267", "02aa804e") == "files/p10/p10000032/s50414267/02aa804e.jpg"
    assert mimic_cxr_path("19999987", "58971208") == "files/p19/p19999987/s58971208.txt"


def test_frontal_views_labels_and_keys(mimic_root):
    items = mimic_cxr_datalist(mimic_root)
    assert [i["id"][:8] for i in items] == ["02aa804e", "2a2277a9", "68b5c4b1"]  # PA and AP only, table order
    first = items[0]
    assert first["image"] == str(mimic_root / "files/p10/p10000032/s50414267" / f"{IMAGES[0][0]}.jpg")
    assert [first[k] for k in ("subject_id", "study_id", "view", "split")] == ["10000032", "50414267", "PA", "train"]
    assert list(first["labels"]) == list(CHEXPERT_CLASSES)
    assert first["labels"]["No Finding"] == 1 and sum(first["labels"].values()) == 1
    assert first["spatial_size"] == (10, 12)  # (Columns, Rows)
    # U-Zeros and not-mentioned-as-negative by default: -1 (Consolidation, Pleural Other) and empty are 0
    second = items[1]["labels"]
    assert {k for k, v in second.items() if v} == {"Cardiomegaly", "Edema", "Support Devices"}
    assert all(type(v) is int for v in second.values())
    # a study without a label row is all-missing: every class 0 under missing="zeros"
    assert items[2]["labels"] == dict.fromkeys(CHEXPERT_CLASSES, 0)


def test_view_and_split_filters(mimic_root):
    assert [i["view"] for i in mimic_cxr_datalist(mimic_root, views=None)] == ["PA", "LATERAL", "AP", "AP", ""]
    assert [i["id"][:8] for i in mimic_cxr_datalist(mimic_root, views=["lateral"])] == ["174413ec"]
    assert [i["id"][:8] for i in mimic_cxr_datalist(mimic_root, views=[""])] == ["096052b7"]
    assert [i["id"][:8] for i in mimic_cxr_datalist(mimic_root, views="AP")] == ["2a2277a9", "68b5c4b1"]
    assert [i["id"][:8] for i in mimic_cxr_datalist(mimic_root, split="train")] == ["02aa804e"]
    assert [i["split"] for i in mimic_cxr_datalist(mimic_root, split="test")] == ["test"]
    assert [i["split"] for i in mimic_cxr_datalist(mimic_root, split="train", views=None)] == ["train"] * 3
    with pytest.raises(XRealInputError, match="split: 'val'"):
        mimic_cxr_datalist(mimic_root, split="val")


def test_uncertainty_and_missing_policies(mimic_root):
    def labels(**policy):
        return mimic_cxr_datalist(mimic_root, **policy)[1]["labels"]

    ones = labels(uncertain="ones")
    positive = {k for k, v in ones.items() if v}
    assert positive == {"Cardiomegaly", "Consolidation", "Edema", "Pleural Other", "Support Devices"}
    ignored = labels(uncertain="ignore")
    assert "Consolidation" not in ignored and "Pleural Other" not in ignored and len(ignored) == 12
    assert ignored["Cardiomegaly"] == 1 and ignored["Atelectasis"] == 0
    # only what the labeler mentioned: 1.0, 0.0 (Pleural Effusion), -1.0
    mentioned = labels(uncertain="ignore", missing="ignore")
    assert mentioned == {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 0, "Support Devices": 1}
    no_row = mimic_cxr_datalist(mimic_root, missing="ignore")[2]["labels"]
    assert no_row == {}
    with pytest.raises(XRealInputError, match="uncertain: 'u-ones'"):
        mimic_cxr_datalist(mimic_root, uncertain="u-ones")


def test_nan_spelled_out_is_missing_not_a_crash(mimic_root):
    table = mimic_root / "mimic-cxr-2.0.0-chexpert.csv"
    table.write_text(CHEXPERT_HEADER + "\n10000032,53189527," + ",".join(["NaN"] * 13 + ["1.0"]) + "\n")
    labels = mimic_cxr_datalist(mimic_root, views=["AP"])[0]["labels"]
    assert labels["Support Devices"] == 1 and sum(labels.values()) == 1


def test_reports_are_split_into_sections(mimic_root, tmp_path):
    items = mimic_cxr_datalist(mimic_root)
    report = items[0]["report"]
    assert report["findings"] == (
        "There is no focal consolidation, pleural effusion or pneumothorax. "
        "Bilateral nodular opacities that most likely represent nipple shadows."
    )
    assert report["impression"] == "No acute cardiopulmonary process."
    assert report["indication"] == "___F with new onset ascites // eval for infection"
    assert "report" not in items[1]  # no report file beside the images: no key
    # a separate reports root (the mimic-cxr-reports archive): then every kept study must have its report
    reports = tmp_path / "mimic-cxr-reports"
    for subject, study in (("10000032", "50414267"), ("10000032", "53189527")):
        path = reports / mimic_cxr_path(subject, study)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"FINDINGS: study {study}.\nIMPRESSION: Normal.")
    with pytest.raises(XRealInputError, match=r"s57375967.*no report file"):
        mimic_cxr_datalist(mimic_root, reports_root=reports)
    items = mimic_cxr_datalist(mimic_root, reports_root=reports / "files", split="validate")
    assert items[0]["report"] == {"findings": "study 53189527.", "impression": "Normal."}


def test_report_sections_variants():
    text = (
        "WET READ: ___ 10:30 PM no ptx\n\nFINAL REPORT\nCOMPARISON: None. FINDINGS: Clear lungs.\n"
        "IMPRESSION\n\nNormal.\nCONCLUSION: Stable."
    )
    sections = report_sections(text)
    assert sections == {
        "findings": "Clear lungs.", "impression": "Normal. Stable.", "wet read": "___ 10:30 PM no ptx",
        "comparison": "None.",
    }  # fmt: skip
    assert report_sections("No headings here.") == {"findings": "", "impression": "", "preamble": "No headings here."}
    # lower-case words followed by a colon inside a sentence are not headings
    assert report_sections("FINDINGS: note: small effusion")["findings"] == "note: small effusion"


def test_errors_name_the_file_and_row(mimic_root):
    table = mimic_root / "mimic-cxr-2.0.0-chexpert.csv"
    table.write_text("\n".join([CHEXPERT_HEADER, CHEXPERT_ROWS[0], CHEXPERT_ROWS[1].replace("-1.0", "2.0", 1)]) + "\n")
    with pytest.raises(XRealInputError, match=r"chexpert\.csv:3.*'Consolidation' holds '2.0'"):
        mimic_cxr_datalist(mimic_root)
    table.write_text(CHEXPERT_HEADER + "\n10000032,53189527,yes" + "," * 13 + "\n")
    with pytest.raises(XRealInputError, match=r"chexpert\.csv:2.*'Atelectasis' is not a number"):
        mimic_cxr_datalist(mimic_root)
    table.write_text(CHEXPERT_HEADER.replace(",Edema", "") + "\n")
    with pytest.raises(XRealInputError, match=r"chexpert\.csv: missing column\(s\) \['Edema'\]"):
        mimic_cxr_datalist(mimic_root)
    table.unlink()
    with pytest.raises(XRealInputError, match=r"no mimic-cxr-2\.0\.0-chexpert\.csv"):
        mimic_cxr_datalist(mimic_root)


def test_bad_rows_and_missing_images_are_skipped_and_counted(mimic_root, caplog):
    missing = mimic_root / mimic_cxr_path("10000764", "57375967", IMAGES[3][0])
    missing.unlink()
    with pytest.raises(XRealInputError, match=r"68b5c4b1.*no image file .*68b5c4b1.*\.jpg"):
        mimic_cxr_datalist(mimic_root)
    assert len(mimic_cxr_datalist(mimic_root, require_images=False)) == 3
    table = mimic_root / "mimic-cxr-2.0.0-chexpert.csv"
    table.write_text("\n".join([CHEXPERT_HEADER, CHEXPERT_ROWS[0], CHEXPERT_ROWS[1].replace("1.0", "x", 1)]) + "\n")
    with caplog.at_level(logging.WARNING):
        items = mimic_cxr_datalist(mimic_root, skip_invalid=True)
    # the bad label row drops study 53189527's image; the missing .jpg drops 68b5c4b1
    assert [i["id"][:8] for i in items] == ["02aa804e"] and "skipped 2 bad row(s)" in caplog.text


def test_datalist_composes_with_load_image(mimic_root):
    items = mimic_cxr_datalist(mimic_root, views=None)
    loader = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    for item in (items[0], items[2]):
        out = loader(item)
        assert tuple(out["image"].shape) == (1, *item["spatial_size"])  # LoadImage puts the image's x axis first
        assert out["labels"] == item["labels"] and out["id"] == item["id"]
    assert loader(items[0])["report"]["impression"] == "No acute cardiopulmonary process."
    pixels = np.asarray(Image.open(items[0]["image"]))
    np.testing.assert_allclose(loader(items[0])["image"][0].numpy(), pixels.T, atol=0)


def test_mimic_iv_demographics_at_the_study_date(mimic_root, tmp_path):
    hosp = tmp_path / "mimiciv" / "hosp"
    hosp.mkdir(parents=True)
    # anchor_year 2178: the StudyDate 2180-05-06 is two years later
    (hosp / "patients.csv").write_text("subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n"
                                       "10000032,F,52,2178,2014 - 2016,\n10000764,M,91,2180,2008 - 2010,\n")  # fmt: skip
    with gzip.open(hosp / "admissions.csv.gz", "wt") as handle:
        # subject 10000032: two White admissions (two spellings) and two others; unknowns are not a group
        handle.write("subject_id,hadm_id,race\n10000032,1,UNKNOWN\n10000032,2,UNKNOWN\n10000032,3,WHITE - RUSSIAN\n"
                     "10000032,4,WHITE - OTHER EUROPEAN\n10000032,5,ASIAN\n10000764,6,BLACK/AFRICAN AMERICAN\n")  # fmt: skip
    items = mimic_cxr_datalist(mimic_root, views=None, patients_root=hosp)
    by_id = {item["id"][:8]: item for item in items}
    assert by_id["02aa804e"]["demographics"] == {"sex": "female", "age": 54, "race": "White", "view": "PA"}
    assert by_id["174413ec"]["demographics"]["view"] == "lateral"
    assert by_id["68b5c4b1"]["demographics"] == {"sex": "male", "age": 91, "race": "Black", "view": "AP"}
    assert "demographics" not in by_id["096052b7"]  # no view, no patient row: nothing known
    assert "demographics" not in mimic_cxr_datalist(mimic_root)[0]  # only when the patients' tables are given
    (hosp / "patients.csv").write_text("subject_id,gender,anchor_age,anchor_year\n10000032,X,52,2178\n")
    with pytest.raises(XRealInputError, match="demographics.sex: unknown value 'X'"):
        mimic_cxr_datalist(mimic_root, patients_root=hosp)
    assert len(mimic_cxr_datalist(mimic_root, patients_root=hosp, skip_invalid=True)) == 1  # subject 10000032 skipped
