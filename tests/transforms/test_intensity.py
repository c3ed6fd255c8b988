# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import numpy as np
import pydicom
import pytest
import torch
from conftest import write_cxr_dicom
from monai.data import PydicomReader
from monai.transforms import Compose, LoadImage, LoadImaged, Resized
from PIL import Image

from monai_xreal import XRealInputError
from monai_xreal.io.cxr import load_cxr
from monai_xreal.transforms.intensity import NormalizeCXRIntensity, NormalizeCXRIntensityd

# 12-bit stored values, 6 rows x 4 columns: non-square so that a transposed read shows
STORED = (np.arange(24).reshape(6, 4) * 178).astype(np.uint16)


def dicom_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 linear window, written to [0, 1]."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("reader", ["PydicomReader", "ITKReader"])
@pytest.mark.parametrize("window,rescale", [(None, None), ((2000, 1000), None), ((1800, 1500), (2, -100))])
def test_monochrome1_is_inverted_and_the_window_follows_the_dicom_formula(tmp_path, reader, window, rescale):
    out = {}
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        path = write_cxr_dicom(tmp_path / f"{photometric}.dcm", STORED, photometric, window, rescale)
        out[photometric] = load_cxr(path, reader=reader)
    assert out["MONOCHROME2"].shape == (1, 4, 6) and out["MONOCHROME2"].dtype == torch.float32  # (1, X, Y)
    torch.testing.assert_close(out["MONOCHROME1"], 1 - out["MONOCHROME2"], atol=1e-6, rtol=0)
    slope, intercept = rescale or (1, 0)
    modality = STORED.T.astype(np.float64) * slope + intercept  # (X, Y)
    if window is None:  # scaled by the range 12 stored bits allow
        expected = (modality - intercept) / (4095 * slope)
    else:
        expected = dicom_window(modality, *window)
    np.testing.assert_allclose(out["MONOCHROME2"][0].numpy(), expected, atol=1e-6)
    assert 0 <= out["MONOCHROME1"].min() and out["MONOCHROME1"].max() <= 1


def test_sigmoid_window_and_voi_lut_sequence(tmp_path):
    lut = np.linspace(100, 4000, 4096).astype(int)
    windows = ([2000, 1500], [1000, 800])
    path = write_cxr_dicom(tmp_path / "voi.dcm", STORED, "MONOCHROME2", windows, None, "SIGMOID", lut)
    # PydicomReader keeps the VOI LUT Sequence, which takes precedence over the window
    np.testing.assert_allclose(load_cxr(path)[0].numpy(), (lut[STORED.T] - 100) / 3900, atol=1e-6)
    # ITK's meta has no sequences: the (second) window with its SIGMOID function is used
    sigmoid = 1 / (1 + np.exp(-4 * (STORED.T - 1500.0) / 800))
    np.testing.assert_allclose(load_cxr(path, reader="ITKReader", window_index=1)[0].numpy(), sigmoid, atol=1e-6)
    plain = load_cxr(path, apply_voi=False)[0].numpy()
    np.testing.assert_allclose(plain, STORED.T / 4095, atol=1e-6)


def test_transform_on_loadimage_output_and_pruned_metadata(tmp_path):
    path = str(write_cxr_dicom(tmp_path / "m1.dcm", STORED, "MONOCHROME1", (2000, 1000)))
    expected = 1 - dicom_window(STORED.T.astype(float), 2000, 1000)
    itk = LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)(path)
    assert itk.shape == (1, 4, 6, 1) and "0028|0004" in itk.meta  # ITK's trailing axis and string tags
    normalize = NormalizeCXRIntensity()
    once = normalize(itk)
    np.testing.assert_allclose(once[0].numpy(), expected, atol=1e-6)
    assert torch.equal(normalize(once), once)  # a second pass changes nothing
    pruned = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=True)(path)
    with pytest.raises(XRealInputError, match=r"m1\.dcm: DICOM read without its tags.*prune_metadata=False"):
        normalize(pruned)


def test_png_images_are_scaled_by_their_bit_depth(tmp_path):
    grey = (np.arange(24).reshape(6, 4) * 10).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = load_cxr(tmp_path / "grey.png")
    assert out.shape == (1, 4, 6)
    np.testing.assert_allclose(out[0].numpy(), grey.T / 255, atol=1e-6)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(load_cxr(tmp_path / "rgb.png")[0].numpy(), grey.T / 255, atol=1e-6)
    Image.fromarray(grey.astype(np.uint16) * 256).save(tmp_path / "sixteen.png")
    np.testing.assert_allclose(load_cxr(tmp_path / "sixteen.png")[0].numpy(), grey.T * 256.0 / 65535, atol=1e-6)


def test_dict_version_in_a_compose_with_loadimaged(tmp_path):
    paths = [write_cxr_dicom(tmp_path / f"{p}.dcm", STORED, p, (2000, 1000)) for p in ("MONOCHROME1", "MONOCHROME2")]
    pipeline = Compose(
        [
            LoadImaged("image", reader=PydicomReader(prune_metadata=False), ensure_channel_first=True),
            NormalizeCXRIntensityd("image"),
            Resized("image", (8, 12), mode="bilinear"),
        ]
    )
    one, two = (pipeline({"image": str(path)})["image"] for path in paths)
    assert one.shape == (1, 8, 12) and 0 <= one.min() and one.max() <= 1
    torch.testing.assert_close(one, 1 - two, atol=1e-6, rtol=0)


def test_unreadable_dicoms_are_one_line_errors_naming_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 5)
    with pytest.raises(XRealInputError, match=r"corrupt\.dcm: cannot read as an image") as info:
        load_cxr(corrupt)
    assert "\n" not in str(info.value)
    no_pixels = tmp_path / "report.dcm"
    write_cxr_dicom(no_pixels, STORED, "MONOCHROME2")
    ds = pydicom.dcmread(str(no_pixels))
    del ds.PixelData
    ds.save_as(str(no_pixels))
    for reader in (None, "ITKReader"):
        with pytest.raises(XRealInputError, match=r"report\.dcm: cannot read as an image") as info:
            load_cxr(no_pixels, reader=reader)
        assert "\n" not in str(info.value)
    with pytest.raises(XRealInputError, match="no such file"):
        load_cxr(tmp_path / "missing.dcm")
