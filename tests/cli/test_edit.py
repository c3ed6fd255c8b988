# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal edit`` on the real chest CR, a simulated radiograph and small files: unchanged outside the region,
the file's own container, provenance, resume, several edits, and one-line errors."""

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import save_mask, write_cxr_dicom
from PIL import Image

from monai_xreal.cli.main import main
from monai_xreal.io.packaged import packaged_file

STORED = (np.arange(48 * 40).reshape(48, 40) * 7 % 4000 + 50).astype(np.uint16)  # rows x columns


def edit(tiny_bundle, *options):
    return main(["edit", "--bundle", str(tiny_bundle), "--num-inference-steps", "2", *map(str, options)])


def test_the_real_cr_is_edited_inside_the_boxes_only(tiny_bundle, tmp_path):
    source = packaged_file("chest_cr")  # 1955 rows x 1841 columns, 15-bit MONOCHROME1
    code = edit(tiny_bundle, "--image", source, "--boxes", "300,1100,800,1600", "--prompt", "Pleural Effusion",
                "--output-dir", tmp_path, "--figure", tmp_path / "before_after.png")  # fmt: skip
    assert code == 0
    before, after = pydicom.dcmread(source), pydicom.dcmread(tmp_path / "RG1_UNCR_edit_seed0.dcm")
    changed = before.pixel_array != after.pixel_array
    rows, columns = np.nonzero(changed)
    assert changed.sum() > 10_000
    assert rows.min() >= 1100 and rows.max() < 1600 and columns.min() >= 300 and columns.max() < 800
    assert after.StudyInstanceUID == before.StudyInstanceUID and after.SeriesInstanceUID != before.SeriesInstanceUID
    record = json.loads((tmp_path / "RG1_UNCR_edit_seed0.json").read_text())
    assert record["synthetic"] and record["edit"]["unchanged_outside_region"]
    assert record["edit"]["edits"] == [{"prompt": "Pleural Effusion", "region": {"boxes": [[300, 1100, 800, 1600]]}}]
    assert record["sampling"]["num_inference_steps"] == 2 and record["sampling"]["seed"] == 0
    with Image.open(tmp_path / "before_after.png") as figure:
        assert figure.size[0] > 2 * figure.size[1]  # before, after and change side by side


def test_a_simulated_radiograph_loses_its_finding_inside_its_mask(tiny_bundle, simulated_samples, tmp_path):
    sample = next(s for s in simulated_samples if s.pathology.any())
    image, finding = np.asarray(sample.image)[0].astype(np.float32), np.asarray(sample.pathology)[0] > 0
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "sim.nii.gz")
    region = save_mask(finding[None].astype(np.uint8), tmp_path, "finding", ".nii.gz")
    assert edit(tiny_bundle, "--image", tmp_path / "sim.nii.gz", "--region", region, "--prompt", "No Finding",
                "--output-dir", tmp_path / "out") == 0  # fmt: skip
    before = nib.load(tmp_path / "sim.nii.gz").get_fdata()
    after = nib.load(tmp_path / "out" / "sim_edit_seed0.nii.gz").get_fdata()
    outside = ~finding
    assert np.array_equal(after[outside], before[outside]) and not np.array_equal(after, before)


def test_several_edits_seeds_resume_and_another_format(tiny_bundle, tmp_path):
    source = write_cxr_dicom(tmp_path / "cr.dcm", STORED, "MONOCHROME1", window=(2000, 4000))
    keep = np.zeros((40, 48), np.uint8)  # reader order: x (40 columns) first
    keep[10:20, 5:15] = 1
    options = ["--image", source, "--boxes", "5,5,20,20", "--boxes", "22,25,38,44", "--prompt", "Nodule", "--prompt",
               "Pleural Effusion", "--keep", save_mask(keep[None], tmp_path, "keep"), "--num-images", "2", "--seed", "4"]  # fmt: skip
    assert edit(tiny_bundle, *options, "--output-dir", tmp_path / "out") == 0
    outputs = sorted((tmp_path / "out").glob("*.dcm"))
    assert [p.name for p in outputs] == ["cr_edit_seed4.dcm", "cr_edit_seed5.dcm"]
    first = pydicom.dcmread(outputs[0]).pixel_array
    allowed = np.zeros_like(STORED, bool)
    allowed[5:20, 5:20] = allowed[25:44, 22:38] = True  # rows, columns of the two boxes
    allowed[5:15, 10:20] = False  # the keep mask, as rows x columns
    assert np.array_equal(first[~allowed], STORED[~allowed]) and not np.array_equal(first, STORED)
    assert not np.array_equal(first, pydicom.dcmread(outputs[1]).pixel_array)  # two seeds, two versions
    record = json.loads((tmp_path / "out" / "cr_edit_seed4.json").read_text())
    assert [e["prompt"] for e in record["edit"]["edits"]] == ["Nodule", "Pleural Effusion"]
    assert record["edit"]["keep"]["sha256"]
    mtime = outputs[0].stat().st_mtime_ns
    assert edit(tiny_bundle, *options, "--output-dir", tmp_path / "out") == 0  # finished versions are skipped
    assert outputs[0].stat().st_mtime_ns == mtime
    assert edit(tiny_bundle, *options, "--output-dir", tmp_path / "png", "--format", "png") == 0
    assert (tmp_path / "png" / "cr_edit_seed4.png").is_file()
    other = [o if o != "Nodule" else "Edema" for o in options]  # another request into the same folder: refused
    assert edit(tiny_bundle, *other, "--output-dir", tmp_path / "out") == 2
    assert outputs[0].stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "options, message",
    [
        (["--region", "{small}"], "differs from the image's"),
        (["--region", "{empty}"], "is empty"),
        (["--boxes", "0,0,40,48"], "covers the whole"),
        (
            ["--boxes", "1,1,5,5", "--boxes", "6,6,9,9", "--prompt", "Edema", "--prompt", "Edema", "--prompt", "Edema"],
            "one prompt for all edits or one per edit",
        ),
        (["--boxes", "5,5,2,9"], "x0 < x1"),
        ([], "give an edit region"),
    ],
    ids=["size", "empty", "whole", "prompts", "bad box", "no region"],
)
def test_bad_input_is_one_line_and_exit_2(tiny_bundle, tmp_path, capsys, options, message):
    source = write_cxr_dicom(tmp_path / "cr.dcm", STORED, "MONOCHROME2")
    small, empty = save_mask(np.ones((1, 8, 8), np.uint8), tmp_path, "small"), save_mask(np.zeros((1, 40, 48), np.uint8),
                                                                                      tmp_path, "empty")  # fmt: skip
    options = [o.format(small=small, empty=empty) for o in options]
    try:
        code = edit(tiny_bundle, "--image", source, *options, "--output-dir", tmp_path / "out")
    except SystemExit as usage_error:  # argparse's one-line usage error
        code = usage_error.code
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1 and "Traceback" not in error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dotted_names_keep_their_stem_and_boxes_past_the_edge_are_clipped(tiny_bundle, tmp_path):
    source = write_cxr_dicom(tmp_path / "1.2.840.5.dcm", STORED, "MONOCHROME2")
    assert edit(tiny_bundle, "--image", source, "--boxes=-5,30,12,60", "--output-dir", tmp_path / "out") == 0
    written = pydicom.dcmread(tmp_path / "out" / "1.2.840.5_edit_seed0.dcm").pixel_array
    changed = np.nonzero(written != STORED)
    assert changed[0].min() >= 30 and changed[1].max() < 12  # rows 30-47 (the image ends at 48), columns 0-11


def test_an_unreadable_dicom_is_one_line(tiny_bundle, tmp_path, capsys):
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    assert edit(tiny_bundle, "--image", tmp_path / "broken.dcm", "--boxes", "1,1,4,4", "--output-dir", tmp_path) == 2
    error = capsys.readouterr().err.strip()
    assert "broken.dcm" in error and len(error.splitlines()) == 1
