# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import subprocess
import sys

import numpy as np
import pydicom
import torch
from conftest import save_mask
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from monai_xreal.data import draw_anatomy
from monai_xreal.io import load_mask, save_images


def write_dicom(path, rows_by_columns: np.ndarray):
    """A minimal secondary-capture DICOM holding ``rows_by_columns`` (uint8), valid for pydicom 2.4 and 3."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "OT", "phantom"
    ds.Rows, ds.Columns = rows_by_columns.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(rows_by_columns, dtype=np.uint8).tobytes()
    if int(pydicom.__version__.split(".")[0]) < 3:
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path))
    return path


def test_png_nifti_and_dicom_masks_load_the_same(tmp_path):
    labels = draw_anatomy((40, 32))  # (1, X, Y): 40 columns, 32 rows
    png = load_mask(save_mask(labels, tmp_path, "anatomy"), "anatomy")
    nifti = load_mask(save_mask(labels, tmp_path, "anatomy", ".nii.gz"), "anatomy")
    dicom = load_mask(write_dicom(tmp_path / "anatomy.dcm", labels[0].T), "anatomy")  # DICOM stores rows first
    assert png.shape == nifti.shape == dicom.shape == (1, 40, 32)
    assert torch.equal(png, torch.as_tensor(labels).float())
    assert torch.equal(nifti.float(), png.float()) and torch.equal(dicom.float(), png.float())


def test_written_images_read_back_with_their_values(tmp_path):
    from monai.transforms import LoadImage

    images = torch.rand(2, 1, 12, 10)
    paths = save_images(images, ["a", "b"], tmp_path, "nii.gz") + save_images(images, ["a", "b"], tmp_path, "png")
    load = LoadImage(image_only=True, ensure_channel_first=True)
    torch.testing.assert_close(load(paths[1]).as_tensor(), images[1])
    torch.testing.assert_close(load(paths[2]).as_tensor() / 255, images[0], atol=1 / 255, rtol=0)


def test_the_package_never_imports_torchvision():
    code = (
        "import sys, monai_xreal, monai_xreal.cli.main, monai_xreal.io; "
        "from monai_xreal import XRealPipeline; XRealPipeline.from_bundle(device='cpu'); "
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1000:]
