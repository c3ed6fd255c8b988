# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import gzip
import logging

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from monai_xreal import XRealInputError
from monai_xreal.data import (
    nih_boxes_datalist,
    siim_pneumothorax_datalist,
    torchxrayvision_file,
    vindr_boxes_datalist,
)
from monai_xreal.transforms import BoxesToMaskd, RLEToMask, RLEToMaskd


def encode_relative(mask: np.ndarray) -> str:
    """SIIM's encoder, written independently: runs over the array flattened in MONAI order, starts relative."""
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    out, position = [], 0
    for start, end in zip(starts, ends):
        out += [start - position, end - start]
        position = end
    return " ".join(map(str, out)) if out else "-1"


def test_rle_decodes_relative_and_absolute_encodings():
    rng = np.random.default_rng(0)
    mask = rng.random((12, 9)) > 0.7
    decoded = RLEToMask((12, 9))(encode_relative(mask))
    assert decoded.shape == (1, 12, 9) and torch.equal(decoded[0].bool(), torch.from_numpy(mask))
    absolute = RLEToMask((4, 4), relative=False)("1 2 16 1")  # 1-based starts
    assert absolute.reshape(-1).tolist() == [1, 1] + [0] * 13 + [1]
    union = RLEToMask((4, 4))(["0 1", "15 1"])
    assert union.sum() == 2 and RLEToMask((4, 4))("-1").sum() == 0


@pytest.mark.parametrize(
    "encoding,match", [("1 2 3", "pairs"), ("1 -2", "pairs"), ("a b", "malformed"), ("10 10", "runs past")]
)
def test_malformed_rle_is_an_error(encoding, match):
    with pytest.raises(XRealInputError, match=match):
        RLEToMask((4, 4))(encoding)


def test_rle_dict_version_checks_the_image_it_belongs_to():
    transform = RLEToMaskd("rle", "spatial_size", output_key="pathology", image_key="image")
    out = transform({"rle": "0 3", "spatial_size": (4, 4), "image": torch.zeros(1, 4, 4)})
    assert out["pathology"].sum() == 3
    with pytest.raises(XRealInputError, match="does not fit"):
        transform({"id": "x", "rle": "0 3", "spatial_size": (4, 4), "image": torch.zeros(1, 8, 4)})


def write_gz(path, text):
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    return path


def test_siim_adapter_on_a_test_made_copy(tmp_path):
    mask = np.zeros((1024, 1024), bool)
    mask[100:110, 200:205] = True
    rle = encode_relative(mask)
    table = write_gz(
        tmp_path / "train-rle.csv.gz",
        f"ImageId, EncodedPixels\na,-1\nb,{rle}\nb,{encode_relative(np.roll(mask, 300, 0))}\n",
    )
    images = tmp_path / "dicom"
    images.mkdir()
    for name in ("a", "b"):
        (images / f"{name}.dcm").write_bytes(b"")
    items = siim_pneumothorax_datalist(table, image_dir=images)
    assert [i["id"] for i in items] == ["a", "b"] and [i["labels"]["Pneumothorax"] for i in items] == [0, 1]
    assert items[1]["image"] == str(images / "b.dcm") and len(items[1]["pathology_rle"]) == 2
    decoded = RLEToMaskd("pathology_rle", "spatial_size", output_key="pathology")(items[1])["pathology"]
    assert decoded.sum() == 100 and decoded[0, 100:110, 200:205].all()


def test_siim_bad_rows_name_the_file_and_row_or_are_skipped_and_counted(tmp_path, caplog):
    table = tmp_path / "rle.csv"
    table.write_text("ImageId,EncodedPixels\na,-1\nb,5 x\nc,0 2\n")
    with pytest.raises(XRealInputError, match=r"rle\.csv:3"):
        siim_pneumothorax_datalist(table)
    with caplog.at_level(logging.WARNING):
        items = siim_pneumothorax_datalist(table, skip_invalid=True)
    assert [i["id"] for i in items] == ["a", "c"] and "skipped 1 bad row" in caplog.text
    (tmp_path / "bad.csv").write_text("ImageId,Pixels\na,-1\n")
    with pytest.raises(XRealInputError, match="missing column"):
        siim_pneumothorax_datalist(tmp_path / "bad.csv")
    no_image = write_gz(tmp_path / "ok.csv.gz", "ImageId,EncodedPixels\nz,-1\n")
    with pytest.raises(XRealInputError, match="no image file"):
        siim_pneumothorax_datalist(no_image, image_dir=tmp_path)


def test_nih_adapter_on_a_test_made_copy(tmp_path):
    table = tmp_path / "BBox_List_2017.csv"
    table.write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "1.png,Cardiomegaly,10.5,20,100,50\n1.png,Effusion,600,700,80,90\n2.png,Nodule,5,6,7,8\n"
    )
    items = nih_boxes_datalist(table)
    assert [i["id"] for i in items] == ["1.png", "2.png"]
    np.testing.assert_allclose(items[0]["boxes"], [[10.5, 20, 110.5, 70], [600, 700, 680, 790]])
    assert items[0]["labels"] == {"Cardiomegaly": 1, "Effusion": 1}
    out = BoxesToMaskd("boxes", (1024, 1024), output_key="pathology")(items[1])
    assert out["pathology"].shape == (1, 1024, 1024) and out["pathology"].sum() == 7 * 8
    table.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n1.png,Fracture,1,2,3,4\n")
    with pytest.raises(XRealInputError, match=r"BBox_List_2017\.csv:2.*unknown class 'Fracture'"):
        nih_boxes_datalist(table)


def test_vindr_adapter_on_a_test_made_copy(tmp_path):
    table = tmp_path / "train.csv"
    table.write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "a,No finding,14,R1,,,,\n"
        "b,Cardiomegaly,3,R8,691.0,1375.0,1653.0,1831.0\n"
        "b,Pleural effusion,10,R9,1789,1729,1875,1992\n"
        "b,No finding,14,R10,,,,\n"
    )
    items = vindr_boxes_datalist(table)
    assert items[0]["labels"] == {} and items[0]["boxes"].shape == (0, 4)
    assert items[1]["labels"] == {"Cardiomegaly": 1, "Pleural effusion": 1} and items[1]["rad_ids"] == ["R8", "R9"]
    only_r8 = vindr_boxes_datalist(table, rad_ids=["R8"])
    assert [i["id"] for i in only_r8] == ["b"] and only_r8[0]["box_labels"] == ["Cardiomegaly"]
    table.write_text("image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\nb,Cardiomegaly,3,R8,5,5,1,1\n")
    with pytest.raises(XRealInputError, match=r"train\.csv:2.*max <= min"):
        vindr_boxes_datalist(table)


def test_box_adapters_skip_drops_the_whole_image_of_a_bad_row(tmp_path, caplog):
    nih = tmp_path / "BBox_List_2017.csv"
    nih.write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "1.png,Effusion,1,2,3,4\n1.png,Fracture,1,2,3,4\n2.png,Nodule,5,6,7,8\n3.png,Mass,1,1,0,4\n"
    )
    with caplog.at_level(logging.WARNING):
        items = nih_boxes_datalist(nih, skip_invalid=True)
    assert [i["id"] for i in items] == ["2.png"] and "skipped 2 bad row(s)" in caplog.text
    vindr = tmp_path / "train.csv"
    vindr.write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "a,Nodule/Mass,8,R8,1,1,5,5\nb,Cardiomegaly,3,R8,10,10,20,20\nb,Nodule/Mass,8,R9,9,9,x,9\n"
        "b,Nodule/Mass,8,R10,9,9,1,1\nc,No finding,14,R1,,,,\n"
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        items = vindr_boxes_datalist(vindr, skip_invalid=True)
    assert [i["id"] for i in items] == ["a", "c"] and "skipped 2 bad row(s)" in caplog.text
    assert [i["id"] for i in vindr_boxes_datalist(vindr, rad_ids=["R8"])] == ["a", "b"]  # the bad rows are R9's, R10's


# -- the real files shipped in torchxrayvision's wheel ----------------------------------------------------------


def test_real_siim_table():
    items = siim_pneumothorax_datalist(torchxrayvision_file("siim_rle"))
    assert len(items) == 12047 and sum(i["labels"]["Pneumothorax"] for i in items) == 2669
    positive = next(i for i in items if i["pathology_rle"])
    mask = Compose([RLEToMaskd("pathology_rle", "spatial_size", output_key="pathology")])(positive)["pathology"]
    lengths = sum(int(n) for rle in positive["pathology_rle"] for n in rle.split()[1::2])
    assert mask.shape == (1, 1024, 1024) and mask.sum() == lengths


def test_real_nih_box_table():
    items = nih_boxes_datalist(torchxrayvision_file("nih_boxes"))
    assert len(items) == 880 and sum(len(i["boxes"]) for i in items) == 984
    boxes = np.concatenate([i["boxes"] for i in items])
    assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= 1024 + 200


def test_real_vindr_box_table():
    items = vindr_boxes_datalist(torchxrayvision_file("vindr_boxes"))
    assert len(items) == 15000 and sum(1 for i in items if i["labels"]) == 4394
    cardiomegaly = [b for i in items for b, c in zip(i["boxes"], i["box_labels"]) if c == "Cardiomegaly"]
    centres = np.array([(b[0] + b[2]) / 2 for b in cardiomegaly])
    assert len(cardiomegaly) == 5427 and 900 < np.median(centres) < 1700  # the heart sits mid-image
