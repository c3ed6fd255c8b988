# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import csv
import logging

import numpy as np
import pytest
import torch
from conftest import save_mask
from monai.transforms import Compose, LoadImaged, Resized

from monai_xreal import XRealInputError
from monai_xreal.data.chexmask import chexmask_datalist
from monai_xreal.transforms import RLEToMask
from monai_xreal.transforms.anatomy import AnatomyRLEToLabelMap, AnatomyRLEToLabelMapd

HEADER = ["dicom_id", "Dice RCA (Mean)", "Dice RCA (Max)", "Landmarks", "Left Lung", "Right Lung", "Heart", "Height",
          "Width"]  # fmt: skip


def encode_row_major(mask_xy: np.ndarray) -> str:
    """CheXmask-style encoder, written independently: runs along image rows, 1-based absolute starts."""
    flat = mask_xy.T.reshape(-1)  # (Height, Width), row after row
    runs, i = [], 0
    while i < flat.size:
        if flat[i]:
            j = i
            while j < flat.size and flat[j]:
                j += 1
            runs += [i + 1, j - i]
            i = j
        else:
            i += 1
    return " ".join(map(str, runs))


def anatomy(size, shift=0):
    """Per-structure masks in (X, Y) order, lungs running under the heart, and the label map they should give."""
    nx, ny = size
    masks = {name: np.zeros(size, bool) for name in ("right_lung", "left_lung", "heart")}
    masks["right_lung"][1 + shift : nx // 2, 1 : ny - 1] = True  # the patient's right lung, on the image's left
    masks["left_lung"][nx // 2 + 1 : nx - 1, 1 : ny - 2] = True
    masks["heart"][nx // 2 - 2 : nx // 2 + 3, ny // 2 : ny] = True  # overlaps both lungs
    labels = np.zeros(size, np.float32)
    for value, name in enumerate(masks, start=1):
        labels[masks[name]] = value
    return masks, labels


def row(image_id, masks, size, dice=0.9, **overrides):
    cells = {
        "dicom_id": image_id, "Dice RCA (Mean)": dice, "Dice RCA (Max)": 0.95, "Landmarks": "1,2,3,4",
        "Right Lung": encode_row_major(masks["right_lung"]), "Left Lung": encode_row_major(masks["left_lung"]),
        "Heart": encode_row_major(masks["heart"]), "Height": size[1], "Width": size[0],
    }  # fmt: skip
    cells.update(overrides)
    return cells


def write_table(path, rows, header=HEADER):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


SIZES = {"a": (12, 9), "b": (10, 7), "c": (9, 12)}


@pytest.fixture()
def table(tmp_path):
    rows = [row(name, anatomy(size, i)[0], size, dice=0.6 + 0.1 * i) for i, (name, size) in enumerate(SIZES.items())]
    return write_table(tmp_path / "MIMIC-CXR-JPG.csv", rows)


def test_encodings_decode_back_exactly_into_one_label_map(table):
    items = chexmask_datalist(table)
    assert [i["id"] for i in items] == ["a", "b", "c"]
    for i, item in enumerate(items):
        masks, expected = anatomy(SIZES[item["id"]], shift=i)
        assert item["spatial_size"] == SIZES[item["id"]] and item["dice_rca"] == pytest.approx(0.6 + 0.1 * i)
        assert set(item["anatomy_rle"]) == {"right_lung", "left_lung", "heart"}
        out = AnatomyRLEToLabelMapd("anatomy_rle", "spatial_size", output_key="anatomy")(item)["anatomy"]
        assert out.shape == (1, *SIZES[item["id"]]) and out.dtype == torch.float32
        assert torch.equal(out[0], torch.from_numpy(expected))  # heart (3) wins where it overlaps a lung
        right = RLEToMask(item["spatial_size"], relative=False, row_major=True)(item["anatomy_rle"]["right_lung"])
        assert torch.equal(right[0].bool(), torch.from_numpy(masks["right_lung"]))
        xs_right, xs_left = (torch.nonzero(out[0] == label)[:, 0].float().mean() for label in (1, 2))
        assert xs_right < xs_left  # label 1, the patient's right lung, lies on the image's left
    assert 4 not in AnatomyRLEToLabelMap((12, 9))(items[0]["anatomy_rle"]).unique()


def test_min_dice_and_id_columns(tmp_path, table):
    assert [i["id"] for i in chexmask_datalist(table, min_dice=0.75)] == ["c"]
    masks = anatomy((12, 9))[0]
    for column, image_id in (("Path", "train/patient1/study1/view1_frontal.jpg"), ("image_id", "x"), ("ImageID", "y")):
        header = [column] + HEADER[1:]
        path = write_table(tmp_path / f"{column}.csv", [{**row("", masks, (12, 9)), column: image_id}], header)
        assert chexmask_datalist(path)[0]["id"] == image_id
    both = write_table(tmp_path / "both.csv", [row("a", masks, (12, 9))], ["image_id"] + HEADER)
    with pytest.raises(XRealInputError, match="several"):
        chexmask_datalist(both)
    assert chexmask_datalist(both, id_column="dicom_id")[0]["id"] == "a"


def test_bad_rows_name_the_file_and_row_or_drop_their_image_counted(tmp_path, caplog):
    masks = anatomy((12, 9))[0]
    rows = [row("a", masks, (12, 9)), row("b", masks, (12, 9), Heart="5 x"), row("c", masks, (12, 9), Height=""),
            row("d", masks, (12, 9), Width=3), row("e", masks, (12, 9)), row("a", masks, (12, 9))]  # fmt: skip
    path = write_table(tmp_path / "chexmask.csv", rows)
    with pytest.raises(XRealInputError, match=r"chexmask\.csv:3: b: Heart: malformed"):
        chexmask_datalist(path)
    with caplog.at_level(logging.WARNING):
        items = chexmask_datalist(path, skip_invalid=True)
    # b malformed, c without a height, d's encodings run past a 3-pixel-wide image, a repeated (both dropped)
    assert [i["id"] for i in items] == ["e"] and "skipped 4 bad row(s)" in caplog.text
    with pytest.raises(XRealInputError, match=r"narrow\.csv:3: d: Right Lung: .*runs past an image of \(3, 9\)"):
        chexmask_datalist(write_table(tmp_path / "narrow.csv", [rows[0], rows[3]]))
    with pytest.raises(XRealInputError, match="missing column.*'Heart'"):
        chexmask_datalist(write_table(tmp_path / "no_heart.csv", rows[:1], [h for h in HEADER if h != "Heart"]))
    with pytest.raises(XRealInputError, match="Dice RCA"):
        chexmask_datalist(write_table(tmp_path / "no_dice.csv", rows[:1], HEADER[:1] + HEADER[3:]), min_dice=0.5)
    with pytest.raises(XRealInputError, match="no encoding for"):
        AnatomyRLEToLabelMap((12, 9))({"right_lung": "1 2"})


def test_images_found_masks_checked_against_them_and_composed(tmp_path, table):
    nested = tmp_path / "files" / "p10" / "p1000" / "s1"
    nested.mkdir(parents=True)
    for name, size in SIZES.items():  # MIMIC-CXR-JPG's nested layout; "c" gets an image of the wrong size
        save_mask(np.zeros((1, *(size if name != "c" else size[::-1])), np.uint8), nested, name, ".png")
    items = chexmask_datalist(table, image_dir=tmp_path)
    assert items[0]["image"] == str(nested / "a.png")
    pipeline = Compose(
        [
            LoadImaged("image", ensure_channel_first=True),
            AnatomyRLEToLabelMapd("anatomy_rle", "spatial_size", output_key="anatomy", image_key="image"),
            Resized(["image", "anatomy"], (24, 18), mode="nearest"),
        ]
    )
    out = pipeline(items[0])
    assert out["anatomy"].shape == (1, 24, 18) and set(out["anatomy"].unique().tolist()) == {0, 1, 2, 3}
    with pytest.raises(RuntimeError) as info:  # Compose wraps its transforms' errors
        pipeline(items[2])
    assert isinstance(info.value.__cause__, XRealInputError)
    assert "c: anatomy masks encoded for (9, 12) do not fit image (12, 9)" in str(info.value.__cause__)
    with pytest.raises(XRealInputError, match="no image file"):
        chexmask_datalist(table, image_dir=tmp_path / "files" / "p10" / "p1000" / "s1" / "none")
