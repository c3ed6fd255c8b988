# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Chest X-ray intensities to float [0, 1], bone bright and lungs dark, from what MONAI's ``LoadImage`` gives.

What MONAI 1.6's readers give for a 2D DICOM (checked with ITK 5.4 and pydicom 2.4 and 3.0):

- ``PydicomReader`` applies Rescale Slope/Intercept, never inverts MONOCHROME1, and by default
  (``prune_metadata=True``) keeps only geometry tags in ``img.meta``: photometric interpretation and window are
  lost. With ``prune_metadata=False`` the meta holds every tag in DICOM JSON form, ``"00280004": {"vr": "CS",
  "Value": ["MONOCHROME1"]}``, sequences (VOI LUT Sequence) included. Its array is ``(X, Y)``.
- ``ITKReader`` (GDCM; ``LoadImage``'s choice for ``.dcm`` when ITK is installed) applies Rescale Slope/Intercept
  and, since ITK's PR #1370 (late 2019; ITK 5.4 here does), converts MONOCHROME1 to MONOCHROME2 while reading
  (stored ``s`` becomes ``2**BitsStored - 1 - s`` before the rescale) though the meta still says MONOCHROME1;
  signed MONOCHROME1 fails there and ``LoadImage`` silently falls back to a pruned ``PydicomReader``. The meta
  holds public tags as strings, ``"0028|0004": "MONOCHROME1 "``, ``"0028|1050": "2000.0\\1500.0"``, without
  sequences. Its array is ``(X, Y, 1)``.
- ``PILReader`` (PNG, JPEG) keeps the PIL ``mode`` (``"L"``, ``"I;16"``, ``"RGB"``) in the meta.

:class:`NormalizeCXRIntensity` undoes ITK's inversion (checked once per process on a tiny test file, as we could
not pin the first ITK release that has it), applies the VOI LUT with pydicom's own ``apply_voi_lut`` on a Dataset
built from the meta, scales to [0, 1] and inverts MONOCHROME1 after the VOI, as the standard says.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.misc import is_dicom
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from monai_xreal.errors import XRealInputError

try:  # pydicom 3
    from pydicom.pixels import apply_voi_lut
except ImportError:  # pydicom 2.4
    from pydicom.pixel_data_handlers.util import apply_voi_lut

__all__ = ["NORMALIZED_KEY", "NormalizeCXRIntensity", "NormalizeCXRIntensityd", "is_dicom_file"]

NORMALIZED_KEY = "xreal_intensity"  # set in the output's meta, so that a second pass changes nothing
PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])
# attributes read from the meta: keyword -> tag (PydicomReader's JSON keys; ITK writes "0028|0004")
TAGS = {
    "PhotometricInterpretation": "00280004", "BitsStored": "00280101", "PixelRepresentation": "00280103",
    "WindowCenter": "00281050", "WindowWidth": "00281051", "RescaleIntercept": "00281052",
    "RescaleSlope": "00281053", "VOILUTFunction": "00281056", "VOILUTSequence": "00283010",
}  # fmt: skip
EIGHT_BIT_MODES, SIXTEEN_BIT_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "RGBX"}, {"I;16", "I;16B", "I;16L"}


def is_dicom_file(path: str | Path) -> bool:
    """A ``.dcm`` / ``.dicom`` name, or a file with the DICOM preamble."""
    path = Path(path)
    return path.suffix.lower() in (".dcm", ".dicom") or (path.is_file() and is_dicom(str(path)))


def _set_little_endian(ds: Dataset) -> None:
    # DICOM JSON InlineBinary (an OW LUT Data) is little endian; pydicom needs to be told to decode it
    if PYDICOM_MAJOR < 3:
        ds.is_little_endian, ds.is_implicit_VR = True, False
    else:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _dataset_from_meta(meta: Mapping) -> tuple[Dataset, str] | None:
    """The pixel and VOI attributes of a DICOM's meta as a pydicom Dataset, and which reader made the meta."""
    if isinstance(meta.get(TAGS["PhotometricInterpretation"]), Mapping):
        ds = Dataset.from_json({tag: meta[tag] for tag in TAGS.values() if tag in meta})
        _set_little_endian(ds)
        return ds, "pydicom"
    itk_keys = {keyword: f"{tag[:4]}|{tag[4:]}" for keyword, tag in TAGS.items()}
    itk = {keyword: str(meta[key]).strip() for keyword, key in itk_keys.items() if key in meta}
    if "PhotometricInterpretation" not in itk:
        return None
    ds = Dataset()
    for keyword, text in itk.items():
        if not text or keyword == "VOILUTSequence":
            continue
        if keyword in ("BitsStored", "PixelRepresentation"):
            setattr(ds, keyword, int(text))
        elif keyword in ("WindowCenter", "WindowWidth"):
            values = [float(v) for v in text.split("\\") if v.strip()]
            setattr(ds, keyword, values if len(values) > 1 else values[0])
        elif keyword.startswith("Rescale"):
            setattr(ds, keyword, float(text))
        else:
            setattr(ds, keyword, text)
    return ds, "itk"


@functools.cache
def itk_inverts_monochrome1() -> bool:
    """Whether this ITK turns MONOCHROME1 into MONOCHROME2 while reading (ITK 5.4 does; releases before 2020 not)."""
    from monai.data import ITKReader
    from monai.transforms import LoadImage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "probe.dcm")
        ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, 2, 1, "MONOCHROME1"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes([0, 200])
        if PYDICOM_MAJOR < 3:
            ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path)
        reader = ITKReader()
        image = LoadImage(image_only=True)(path, reader=reader)
    return float(torch.as_tensor(image).reshape(-1)[0]) > 100  # stored 0 read as 255


def _spatial_2d(array: np.ndarray, argument: str) -> np.ndarray:
    """``(C, X, Y)`` from channel-first input, dropping trailing singleton axes (ITK's ``(1, X, Y, 1)``)."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise XRealInputError(argument, f"expected a channel-first 2D image, got shape {tuple(array.shape)}")
    return array


class NormalizeCXRIntensity(Transform):
    """A chest X-ray read by ``LoadImage`` (channel first) to ``(1, X, Y)`` float32 in [0, 1], bone bright.

    DICOM (meta from ``PydicomReader(prune_metadata=False)`` or ``ITKReader``; both apply Rescale Slope/Intercept):

    1. ITK's own MONOCHROME1 inversion is undone, so both readers give the modality values.
    2. With ``apply_voi``, the VOI LUT is applied by pydicom's ``apply_voi_lut`` (2.4 and 3): the VOI LUT Sequence
       if any (``PydicomReader`` only: ITK's meta has no sequences), else window ``window_index`` of Window
       Center/Width with its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID). The result is scaled by the VOI
       output range: the window's (pydicom maps it onto the stored bit range) or the LUT's smallest to largest entry.
    3. Without a VOI (none in the file, or ``apply_voi=False``), values are scaled by the range the stored bit
       depth allows (``BitsStored``, through the rescale), not by the image's min/max, so that intensities stay
       comparable between images.
    4. MONOCHROME1 is inverted last (``1 - x``): the standard inverts after the VOI.

    Presentation LUT Shape is not read: in DX images it only restates the photometric interpretation.

    Other images: PIL's 8-bit modes are divided by 255 and 16-bit modes by 65535 (RGB is averaged to grey); any
    other source (NIfTI, NumPy, float TIFF) is scaled by its own min/max.

    Raises:
        XRealInputError (naming the file): a DICOM whose meta lacks its tags (read with a pruning
            ``PydicomReader``), a colour or multi-frame DICOM, or a VOI that pydicom rejects.
    """

    def __init__(self, apply_voi: bool = True, window_index: int = 0) -> None:
        self.apply_voi, self.window_index = apply_voi, window_index

    def __call__(self, img, meta: Mapping | None = None) -> MetaTensor:
        meta = dict(img.meta if isinstance(img, MetaTensor) else meta or {})
        if meta.get(NORMALIZED_KEY):
            return img
        name = str(meta.get("filename_or_obj", "image"))
        array = _spatial_2d(np.asarray(torch.as_tensor(img).detach().cpu(), dtype=np.float64), name)
        try:
            found = _dataset_from_meta(meta)
        except (ValueError, TypeError, KeyError) as err:
            raise XRealInputError(name, f"unusable DICOM tags in the image's meta: {err}") from err
        if found is not None:
            out = self._dicom(array, *found, name)
        elif "mode" in meta:
            out = self._pil(array, str(meta["mode"]))
        elif name != "image" and is_dicom_file(name):
            raise XRealInputError(
                name, "DICOM read without its tags: read it with PydicomReader(prune_metadata=False) or ITKReader"
            )
        else:
            low, high = array.min(), array.max()
            out = (array.mean(0) - low) / (high - low) if high > low else np.zeros(array.shape[1:])
        meta[NORMALIZED_KEY] = "[0, 1], bone bright"
        result = torch.as_tensor(np.clip(out, 0.0, 1.0), dtype=torch.float32)[None]
        return MetaTensor(result, meta=meta)  # the meta holds the input's affine

    @staticmethod
    def _pil(array: np.ndarray, mode: str) -> np.ndarray:
        grey = array[:3].mean(0) if array.shape[0] >= 3 else array[0]
        if mode in EIGHT_BIT_MODES:
            return grey / 255.0
        if mode in SIXTEEN_BIT_MODES:
            return grey / 65535.0
        low, high = grey.min(), grey.max()
        return (grey - low) / (high - low) if high > low else np.zeros_like(grey)

    def _dicom(self, array: np.ndarray, ds: Dataset, reader: str, name: str) -> np.ndarray:
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        if photometric not in ("MONOCHROME1", "MONOCHROME2") or array.shape[0] != 1:
            raise XRealInputError(name, f"not a grey-scale 2D X-ray: {photometric}, shape {tuple(array.shape)}")
        if "BitsStored" not in ds:
            raise XRealInputError(name, "DICOM meta without Bits Stored")
        values = array[0]
        slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        bits, signed = int(ds.BitsStored), int(ds.get("PixelRepresentation", 0)) == 1
        if reader == "itk" and photometric == "MONOCHROME1" and not signed and itk_inverts_monochrome1():
            values = slope * (2**bits - 1) + 2 * intercept - values  # GDCM stored s -> 2**bits - 1 - s, then rescale
        has_lut = len(ds.get("VOILUTSequence", [])) > 0
        if self.apply_voi and (has_lut or ("WindowCenter" in ds and "WindowWidth" in ds)):
            try:
                if has_lut:
                    out = apply_voi_lut(np.round(values).astype(np.int64), ds, index=self.window_index)
                    entries = apply_voi_lut(self._lut_inputs(ds), ds, index=self.window_index)
                    low, high = float(np.min(entries)), float(np.max(entries))
                else:
                    out = apply_voi_lut(values, ds, index=self.window_index)
                    low, high = self._window_range(ds)
            except (ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
                raise XRealInputError(name, f"cannot apply the DICOM VOI LUT: {err}") from err
        else:
            low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
            low, high = sorted((slope * low + intercept, slope * high + intercept))
            out = values
        scaled = (np.asarray(out, np.float64) - low) / (high - low) if high > low else np.zeros_like(values)
        return 1.0 - np.clip(scaled, 0.0, 1.0) if photometric == "MONOCHROME1" else scaled

    def _window_range(self, ds: Dataset) -> tuple[float, float]:
        """The window's output range, by asking pydicom far outside the window (exact even for SIGMOID)."""
        center, width = (self._nth(ds[keyword].value) for keyword in ("WindowCenter", "WindowWidth"))
        far = 100 * abs(width) + 1
        ends = apply_voi_lut(np.array([center - far, center + far]), ds, index=self.window_index)
        return float(ends[0]), float(ends[1])

    def _nth(self, value) -> float:
        """Value ``window_index`` of a possibly multi-valued attribute."""
        many = isinstance(value, Sequence) and not isinstance(value, str)
        return float(value[self.window_index] if many else value)

    @staticmethod
    def _lut_inputs(ds: Dataset) -> np.ndarray:
        """Every input the first VOI LUT maps, to read its output range through pydicom."""
        entries, first = int(ds.VOILUTSequence[0].LUTDescriptor[0]), int(ds.VOILUTSequence[0].LUTDescriptor[1])
        return np.arange(first, first + (entries or 65536), dtype=np.int64)


class NormalizeCXRIntensityd(MapTransform):
    """Dictionary version of :class:`NormalizeCXRIntensity` (after ``LoadImaged(..., ensure_channel_first=True)``)."""

    def __init__(
        self, keys: KeysCollection, apply_voi: bool = True, window_index: int = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = NormalizeCXRIntensity(apply_voi, window_index)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], d.get(f"{key}_meta_dict"))  # type: ignore[arg-type]
        return d
