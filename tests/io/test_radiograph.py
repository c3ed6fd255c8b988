# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Radiograph files kept as stored: the intensity mapping and its inverse, and edits written into the same container."""

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import dciodvfy_report, write_cxr_dicom
from PIL import Image

from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_cxr, read_radiograph, write_radiograph
from monai_xreal.io.dicom import read_dicom_provenance
from monai_xreal.io.packaged import packaged_file

PROVENANCE = {"bundle": {"name": "cxr_xreal", "version": "test", "model_sha256": "0" * 64}, "prompt": "Nodule"}
STORED = (np.arange(40 * 30).reshape(40, 30) * 3 % 4096).astype(np.uint16)  # rows x columns, 12-bit


def _round_trip_is_exact(radiograph):
    """Stored -> [0, 1] -> stored gives every value back where the mapping is one to one (inside the window)."""
    image = radiograph.image[0].numpy()
    unsaturated = (image > 0) & (image < 1)
    assert unsaturated.mean() > 0.5
    assert np.array_equal(radiograph.to_stored(radiograph.image)[unsaturated], radiograph.stored[unsaturated])


def test_the_real_cr_maps_back_to_its_stored_values_exactly():
    radiograph = read_radiograph(packaged_file("chest_cr"))  # 15-bit MONOCHROME1 with a window
    assert radiograph.fmt == "dcm" and radiograph.stored.shape == (1841, 1955)
    assert torch.equal(radiograph.image, load_cxr(packaged_file("chest_cr")))  # the one mapping every command uses
    _round_trip_is_exact(radiograph)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_an_edited_dicom_keeps_its_pixels_study_and_window_and_is_marked(tmp_path, photometric):
    source = write_cxr_dicom(tmp_path / "cr.dcm", STORED, photometric, window=(2048, 4096), rescale=(1.0, -5.0))
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.save_as(source)
    radiograph = read_radiograph(source)
    _round_trip_is_exact(radiograph)
    stored = radiograph.stored.copy()
    stored[5:10, 5:10] = 77
    out = write_radiograph(radiograph, stored, tmp_path / "out" / "edited.dcm", PROVENANCE, "Nodule")
    before, after = pydicom.dcmread(source), pydicom.dcmread(out)
    assert np.array_equal(after.pixel_array, stored.T)
    assert after.StudyInstanceUID == before.StudyInstanceUID and after.PatientID == before.PatientID
    assert after.SeriesInstanceUID != before.SeriesInstanceUID and after.SOPInstanceUID != before.SOPInstanceUID
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
    assert (after.PhotometricInterpretation, after.BitsStored, after.WindowCenter, after.RescaleIntercept) == (
        photometric, 12, 2048, -5)  # fmt: skip
    assert list(after.ImageType)[:2] == ["DERIVED", "SECONDARY"] and "SYNTHETIC" in after.SeriesDescription
    assert after.SourceImageSequence[0].ReferencedSOPInstanceUID == before.SOPInstanceUID
    assert "SYNTHETIC EDIT" in after.DerivationDescription and read_dicom_provenance(out) == PROVENANCE
    assert np.array_equal(read_radiograph(out).stored, stored)


def test_edited_real_cr_is_a_valid_dicom_with_no_new_errors(tmp_path):
    def errors(path):
        return {line for line in dciodvfy_report(path).splitlines() if line.startswith("Error")}

    source = packaged_file("chest_cr")
    radiograph = read_radiograph(source)
    out = write_radiograph(radiograph, radiograph.stored, tmp_path / "edited.dcm", PROVENANCE, "Nodule")
    assert errors(out) <= errors(source)  # the original's own errors (zero Pixel Spacing) stay


@pytest.mark.parametrize("mode, top", [("L", 255), ("I;16", 65535)])
def test_png_keeps_its_bit_depth(tmp_path, mode, top):
    rows = np.random.default_rng(0).integers(0, top + 1, size=(24, 31))
    path = tmp_path / "x.png"
    Image.fromarray(rows.astype(np.uint8 if mode == "L" else np.uint16)).save(path)
    radiograph = read_radiograph(path)
    assert radiograph.stored.shape == (31, 24)  # reader order: x first
    _round_trip_is_exact(radiograph)
    stored = radiograph.stored.copy()
    stored[0, 0] = top // 2
    out = write_radiograph(radiograph, stored, tmp_path / "y.png", PROVENANCE)
    with Image.open(out) as written:
        assert written.mode == Image.open(path).mode
        assert np.array_equal(np.asarray(written).T, stored)


def test_nifti_keeps_its_geometry_and_values(tmp_path):
    data = np.random.default_rng(1).normal(100, 20, size=(20, 16)).astype(np.float32)
    affine = np.diag([0.5, 0.7, 1.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "x.nii.gz")
    radiograph = read_radiograph(tmp_path / "x.nii.gz")
    np.testing.assert_allclose(radiograph.to_stored(radiograph.image), data, rtol=0, atol=1e-2 * data.std())
    stored = data.copy()
    stored[3, 3] = 0.0
    written = nib.load(write_radiograph(radiograph, stored, tmp_path / "y.nii.gz", PROVENANCE))
    assert np.array_equal(np.asarray(written.dataobj), stored) and np.allclose(written.affine, affine)


def test_unreadable_and_colour_files_are_refused_in_one_line(tmp_path):
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    with pytest.raises(XRealInputError):
        read_radiograph(tmp_path / "broken.dcm")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(XRealInputError, match="RGB PNG"):
        read_radiograph(tmp_path / "rgb.png")
    with pytest.raises(XRealInputError, match="no such file"):
        read_radiograph(tmp_path / "missing.dcm")
    (tmp_path / "notes.txt").write_text(json.dumps({}))
    with pytest.raises(XRealInputError, match="DICOM, PNG or NIfTI"):
        read_radiograph(tmp_path / "notes.txt")


def test_a_jpeg_2000_dicom_is_written_back_uncompressed_with_the_same_pixels(tmp_path):
    compressed = read_radiograph(packaged_file("chest_cr_j2k"))  # RG1, lossless JPEG 2000
    assert np.array_equal(compressed.stored, read_radiograph(packaged_file("chest_cr")).stored)
    out = write_radiograph(compressed, compressed.stored, tmp_path / "edited.dcm", PROVENANCE)
    written = pydicom.dcmread(out)
    assert written.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert np.array_equal(written.pixel_array.T, compressed.stored)


def test_a_scaled_nifti_is_refused_and_the_original_dataset_never_changes(tmp_path):
    image = nib.Nifti1Image(np.arange(20 * 16, dtype=np.int16).reshape(20, 16), np.eye(4))
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    with pytest.raises(XRealInputError, match="scl_slope"):
        read_radiograph(tmp_path / "scaled.nii.gz")
    source = write_cxr_dicom(tmp_path / "cr.dcm", STORED, "MONOCHROME2")
    radiograph = read_radiograph(source)
    before = (radiograph.source.SOPInstanceUID, radiograph.source.get("SeriesNumber"))
    first = write_radiograph(radiograph, radiograph.stored, tmp_path / "a.dcm", PROVENANCE)
    second = write_radiograph(radiograph, radiograph.stored, tmp_path / "b.dcm", PROVENANCE)
    assert (radiograph.source.SOPInstanceUID, radiograph.source.get("SeriesNumber")) == before
    for path in (first, second):  # each edit points at the original, not at the edit before it
        assert pydicom.dcmread(path).SourceImageSequence[0].ReferencedSOPInstanceUID == before[0]
