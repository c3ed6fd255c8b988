# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Reading a chest X-ray (DICOM, PNG, JPEG, ...) as ``(1, X, Y)`` float [0, 1], bone bright, or a one-line error."""

from __future__ import annotations

from pathlib import Path

import monai.data
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImage

from monai_xreal.errors import XRealInputError
from monai_xreal.transforms.intensity import NormalizeCXRIntensity, is_dicom_file

__all__ = ["load_cxr"]


def _reader(path: Path, reader: str | ImageReader | None) -> ImageReader | None:
    if isinstance(reader, ImageReader):
        return reader
    if reader is None:
        # PydicomReader, unpruned, for DICOM: it keeps the VOI LUT Sequence and does not depend on the ITK release
        reader = "PydicomReader" if is_dicom_file(path) else None
    if reader is None:
        return None
    if reader == "PydicomReader":
        return monai.data.PydicomReader(prune_metadata=False)
    the_class = getattr(monai.data, str(reader), None)
    if not (isinstance(the_class, type) and issubclass(the_class, ImageReader)):
        raise XRealInputError("reader", f"unknown MONAI image reader {reader!r}")
    return the_class()


def load_cxr(
    path: str | Path, reader: str | ImageReader | None = None, apply_voi: bool = True, window_index: int = 0
) -> MetaTensor:
    """A chest X-ray file as a ``(1, X, Y)`` float32 MetaTensor in [0, 1] (MONAI reader order), bone bright.

    Args:
        path: a DICOM, PNG, JPEG or any single 2D image a MONAI reader takes.
        reader: ``None`` (``PydicomReader(prune_metadata=False)`` for DICOM, MONAI's choice otherwise), a reader
            name (``"PydicomReader"``, always unpruned, or ``"ITKReader"``...) or an ``ImageReader``. The reader is
            used alone: no silent fall back to another reader when it fails.
        apply_voi, window_index: see :class:`~monai_xreal.transforms.intensity.NormalizeCXRIntensity`.

    Raises:
        XRealInputError: naming the file, in one line: missing, unreadable (corrupt, or a DICOM without pixel
            data), or not a grey-scale 2D image.
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError(str(path), "no such file")
    chosen = _reader(path, reader)
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    try:
        image = loader(str(path)) if chosen is None else loader(str(path), reader=chosen)
    except Exception as err:  # readers raise many kinds of errors; all mean the same to the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        first = "".join(c if c.isprintable() else "?" for c in first)[:200]  # corrupt files echo their bytes
        raise XRealInputError(str(path), f"cannot read as an image: {first}") from err
    return NormalizeCXRIntensity(apply_voi, window_index)(image)
