# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""CheXpert's table and demographics release read into a datalist with labels, views and demographics."""

from __future__ import annotations

import pytest
from test_mimic import write_jpeg

from monai_xreal.data import chexpert_datalist
from monai_xreal.data.mimic import CHEXPERT_CLASSES
from monai_xreal.errors import XRealInputError

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_CLASSES)
ROWS = [  # Cardiomegaly is the second class
    ("CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal", "AP", ",,1.0" + "," * 12),
    ("CheXpert-v1.0/train/patient00002/study2/view1_frontal.jpg", "Male", "87", "Frontal", "PA", ",,-1.0" + "," * 12),
    ("CheXpert-v1.0/train/patient00002/study2/view2_lateral.jpg", "Male", "87", "Lateral", "", "," * 14),
    ("CheXpert-v1.0/train/patient00003/study1/view1_frontal.jpg", "Unknown", "0", "Frontal", "AP", "," * 14),
]


@pytest.fixture()
def chexpert_root(tmp_path):
    root = tmp_path / "CheXpert-v1.0"
    lines = [HEADER]
    for path, sex, age, frontal, ap_pa, labels in ROWS:
        lines.append(f"{path},{sex},{age},{frontal},{ap_pa}{labels}")
        write_jpeg(tmp_path / path, 8, 8)
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "demo.csv").write_text("PATIENT,GENDER,AGE_AT_CXR,PRIMARY_RACE,ETHNICITY\n"
                                       "patient00001,Female,68,\"White, non-Hispanic\",Non-Hispanic/Non-Latino\n"
                                       "patient00002,Male,87,\"Other, Hispanic\",Hispanic/Latino\n"
                                       "patient00003,Unknown,0,Patient Refused,Unknown\n")  # fmt: skip
    return root


def test_labels_views_and_demographics(chexpert_root):
    items = chexpert_datalist(chexpert_root, demographics_table=chexpert_root.parent / "demo.csv")
    assert [i["id"] for i in items] == ["patient00001_study1_view1_frontal", "patient00002_study2_view1_frontal",
                                        "patient00003_study1_view1_frontal"]  # fmt: skip
    first, second, third = items
    assert first["image"] == str(chexpert_root / "train/patient00001/study1/view1_frontal.jpg")
    assert first["labels"]["Cardiomegaly"] == 1 and second["labels"]["Cardiomegaly"] == 0  # U-Zeros
    assert first["demographics"] == {"sex": "female", "age": 68, "race": "White", "view": "AP"}
    assert second["demographics"] == {"sex": "male", "age": 87, "race": "Hispanic", "view": "PA"}
    assert third["demographics"] == {"age": 0, "view": "AP"}  # unknown sex and refused race left out
    assert [i["id"] for i in chexpert_datalist(chexpert_root, views="PA")] == [second["id"]]  # a string is one view
    every = chexpert_datalist(chexpert_root, views=None)
    assert len(every) == 4 and every[2]["view"] == "lateral" and "race" not in every[0]["demographics"]


def test_bad_values_name_the_row(chexpert_root):
    table = chexpert_root / "train.csv"
    table.write_text(table.read_text().replace("Female,68", "Female,200"))
    with pytest.raises(XRealInputError, match=r"train.csv:2 demographics.age: must be in \[0, 120\]"):
        chexpert_datalist(chexpert_root)
    assert len(chexpert_datalist(chexpert_root, skip_invalid=True)) == 2
