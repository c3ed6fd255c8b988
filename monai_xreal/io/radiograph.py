# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A radiograph file kept as it is stored, with the [0, 1] view the models see and the way back, for editing.

:func:`read_radiograph` keeps the stored pixel values (DICOM stored values, PNG 8- or 16-bit values, NIfTI voxels)
and computes the model's view with the project's one intensity mapping
(:class:`~monai_xreal.transforms.intensity.NormalizeCXRIntensity`: rescale, VOI LUT or window, MONOCHROME1
inverted). That mapping is monotone in the stored value, so it is tabulated once over every value the file can hold
and inverted by interpolation (:meth:`Radiograph.to_stored`). :func:`write_radiograph` writes an edit back into the
same container: the same size, bit depth, photometric interpretation, window and geometry; only the pixels the edit
changed differ, so a viewer shows the unchanged part exactly as before. A DICOM keeps its study and patient, gets a
new series and SOP instance, and is marked derived and synthetic (Image Type ``DERIVED``, a Derivation Description
and Source Image Sequence pointing at the original, and the ``MONAI_XREAL`` private block with the provenance, as
:func:`~monai_xreal.io.dicom.write_dicom` marks generated images).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from PIL import Image

from monai_xreal.errors import XRealInputError
from monai_xreal.io.atomic import atomic_path
from monai_xreal.io.cxr import load_cxr
from monai_xreal.io.dicom import dicom_uid, mark_synthetic, save_dicom
from monai_xreal.io.formats import IMAGE_FORMATS
from monai_xreal.transforms.intensity import NormalizeCXRIntensity, is_dicom_file

__all__ = ["RADIOGRAPH_FORMATS", "Radiograph", "read_radiograph", "write_radiograph"]

RADIOGRAPH_FORMATS = tuple(IMAGE_FORMATS)  # what an edit reads and writes back: the image formats
_FLOAT_TABLE = 65536  # samples of the mapping for float voxels (NIfTI)


@dataclass
class Radiograph:
    """A radiograph as stored, and as the models see it.

    Attributes:
        path: the file it was read from.
        fmt: its container, one of :data:`RADIOGRAPH_FORMATS`.
        image: ``(1, X, Y)`` float32 ``MetaTensor`` in [0, 1], bone bright, MONAI reader order.
        stored: ``(X, Y)`` the stored values in reader order, in the file's own dtype.
        table: ``(stored values, their [0, 1] values)``, increasing stored values: the intensity mapping.
        source: what the writer needs to write the same container (the pydicom ``Dataset``, the NIfTI image or
            the PIL mode).
    """

    path: Path
    fmt: str
    image: MetaTensor
    stored: np.ndarray
    table: tuple[np.ndarray, np.ndarray]
    source: Any = field(repr=False)

    def to_stored(self, image: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(1, X, Y)`` or ``(X, Y)`` values in [0, 1] to stored values of the file's dtype (the mapping inverted;
        values beyond what the file's mapping reaches go to its nearest end)."""
        values = np.asarray(torch.as_tensor(image).detach().cpu(), dtype=np.float64).reshape(self.stored.shape)
        stored, normalized = self.table
        order = np.argsort(normalized, kind="stable")  # MONOCHROME1 runs downwards
        raw = np.interp(values, normalized[order], stored[order])
        if np.issubdtype(self.stored.dtype, np.integer):
            info = np.iinfo(self.stored.dtype)
            raw = np.clip(np.round(raw), info.min, info.max)
        return raw.astype(self.stored.dtype)


def _format(path: Path) -> str:
    if is_dicom_file(path):
        return "dcm"
    fmt = next((f for f, ext in IMAGE_FORMATS.items() if f != "dcm" and path.name.lower().endswith(ext)), None)
    if fmt is None:
        raise XRealInputError(str(path), f"not a radiograph this command edits: give a DICOM, PNG or NIfTI file "
                              f"({', '.join(RADIOGRAPH_FORMATS)})")  # fmt: skip
    return fmt


def read_radiograph(path: str | Path) -> Radiograph:
    """Read a DICOM (any transfer syntax pydicom decodes; MONOCHROME1 or 2, any bit depth), PNG (8- or 16-bit
    grey) or NIfTI (2D) radiograph.

    Raises:
        XRealInputError: naming the file, in one line: missing, unreadable, colour or not 2D.
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError(str(path), "no such file")
    fmt = _format(path)
    image = load_cxr(path)  # the one mapping every command uses; errors are one line already
    try:
        if fmt == "dcm":
            source = pydicom.dcmread(str(path))
            stored = np.asarray(source.pixel_array).T
            table = _dicom_table(source, image)
        elif fmt == "png":
            with Image.open(path) as opened:
                source = opened.mode
                if source not in ("L", "I;16", "I;16B", "I;16L"):
                    raise XRealInputError(str(path), f"a {source} PNG: give an 8- or 16-bit grey PNG")
                stored = np.asarray(opened).T.copy()
            top = 255 if source == "L" else 65535
            values = np.arange(top + 1, dtype=np.float64)
            table = (values, values / top)
        else:
            import nibabel as nib

            source = nib.load(str(path))
            slope, inter = source.dataobj.slope, source.dataobj.inter
            if (slope, inter) != (1.0, 0.0):  # its stored voxels are not its values: they could not come back exactly
                raise XRealInputError(str(path), f"a NIfTI scaled by scl_slope {slope:g} / scl_inter {inter:g}: "
                                      "save it unscaled (e.g. as float32) to edit it")  # fmt: skip
            stored = np.asanyarray(source.dataobj)
            stored = stored.reshape(stored.shape[:2]) if stored.size == np.prod(stored.shape[:2]) else stored
            if stored.ndim != 2:
                raise XRealInputError(str(path), f"expected a 2D image, got shape {tuple(stored.shape)}")
            low, high = float(stored.min()), float(stored.max())
            values = np.linspace(low, high, _FLOAT_TABLE)
            table = (values, (values - low) / (high - low) if high > low else np.zeros_like(values))
    except XRealInputError:
        raise
    except Exception as err:  # decoders raise many kinds of errors; all mean the same to the user
        raise XRealInputError(str(path), f"cannot read its pixels: {str(err).splitlines()[0][:200]}") from err
    if stored.shape != tuple(image.shape[1:]):
        raise XRealInputError(str(path), f"stored pixels {stored.shape} and the read image {tuple(image.shape[1:])} "
                              "disagree")  # fmt: skip
    return Radiograph(path, fmt, image, stored, table, source)


def _dicom_table(ds: pydicom.Dataset, image: MetaTensor) -> tuple[np.ndarray, np.ndarray]:
    """Every stored value the file can hold, and its [0, 1] value by the same transform ``load_cxr`` applied
    (PydicomReader applies the rescale first, so the table does too)."""
    bits, signed = int(ds.BitsStored), int(ds.get("PixelRepresentation", 0)) == 1
    stored = np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else np.arange(2**bits)
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    meta = {k: v for k, v in image.meta.items() if k != "xreal_intensity"}
    ramp = MetaTensor(torch.as_tensor(stored * slope + intercept, dtype=torch.float64)[None, :, None], meta=meta)
    normalized = NormalizeCXRIntensity()(ramp)[0, :, 0].double().numpy()
    return stored.astype(np.float64), normalized


def write_radiograph(
    radiograph: Radiograph,
    stored: np.ndarray,
    path: str | Path,
    provenance: Mapping,
    description: str = "edited",
) -> Path:
    """Write ``stored`` (``(X, Y)`` in the file's dtype, e.g. from :meth:`Radiograph.to_stored`) in the container
    ``radiograph`` came from, atomically.

    Args:
        radiograph: the original.
        stored: the new stored values.
        path: the file to write (its format is the original's).
        provenance: the record of the edit (also written into a DICOM's private block).
        description: what was done, for the DICOM's Series and Derivation Descriptions.
    """
    if stored.shape != radiograph.stored.shape or stored.dtype != radiograph.stored.dtype:
        raise ValueError(f"expected {radiograph.stored.shape} {radiograph.stored.dtype}, got {stored.shape} "
                         f"{stored.dtype}")  # fmt: skip
    with atomic_path(path) as temporary:
        if radiograph.fmt == "dcm":
            save_dicom(_derived_dicom(radiograph.source, stored, provenance, description), temporary)
        elif radiograph.fmt == "png":
            mode = "I;16" if radiograph.source.startswith("I;16") else "L"
            Image.fromarray(np.ascontiguousarray(stored.T), mode=mode if mode == "L" else None).save(temporary)
        else:
            import nibabel as nib

            original = radiograph.source
            data = stored.reshape(original.shape)
            nib.save(type(original)(data, original.affine, original.header), str(temporary))
    return Path(path)


def _derived_dicom(original: pydicom.Dataset, stored: np.ndarray, provenance: Mapping, description: str):
    """A copy of ``original`` with the new pixels (uncompressed), a new series and instance, marked derived."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    ds = copy.deepcopy(original)  # Dataset.copy() is shallow: the original must not change
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = np.ascontiguousarray(stored.T).astype(stored.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds["PixelData"].is_undefined_length = False
    for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if keyword in ds and str(ds.get("LossyImageCompression", "00")) != "01":
            del ds[keyword]
    source = Dataset()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = original.SOPClassUID, original.SOPInstanceUID
    ds.SourceImageSequence = Sequence([source])
    ds.SeriesInstanceUID, ds.SOPInstanceUID = dicom_uid(), dicom_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesNumber = int(original.get("SeriesNumber") or 0) + 1000
    ds.SeriesDescription = f"SYNTHETIC EDIT {description}"[:64]
    image_type = list(original.get("ImageType", ["DERIVED", "SECONDARY"]))
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]  # made after the examination, from its image
    now = datetime.now(timezone.utc)
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    mark_synthetic(ds, provenance, f"SYNTHETIC EDIT ({description}) of SOP Instance {original.SOPInstanceUID}",
                   "pixels inside the edited region were made by a generative model, not acquired")  # fmt: skip
    return ds
