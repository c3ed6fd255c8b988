# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Input checks and result files shared by the infer tasks."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from monai_xreal.errors import XRealInputError
from monai_xreal.io import save_images
from monai_xreal.io.dicom import DicomIdentity, dicom_uid, write_dicom
from monai_xreal.label.params import RESULT_EXTENSIONS, RequestTooLarge

__all__ = ["check_image_size", "check_upload", "write_result"]


def check_upload(path: str | os.PathLike | None, argument: str, max_bytes: int) -> Path:
    """The path of a request's input file, refused if missing or larger than ``max_bytes``.

    Raises:
        XRealInputError: no file was sent (or the datastore has none under that id).
        RequestTooLarge: the file is larger than ``max_bytes``.
    """
    if not path or not Path(path).is_file():
        raise XRealInputError(argument, "no file: send it as a form field or name a datastore image with ?image=")
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise RequestTooLarge(
            argument, f"{size / 2**20:.1f} MiB; this server takes files up to {max_bytes / 2**20:g} MiB"
        )
    return Path(path)


def check_image_size(image: torch.Tensor, argument: str, max_size: int) -> None:
    """Refuse a ``(C, X, Y)`` image with a side longer than ``max_size`` pixels (:class:`RequestTooLarge`)."""
    if max(image.shape[1:]) > max_size:
        raise RequestTooLarge(
            argument, f"{tuple(image.shape[1:])} pixels; this server takes sides up to {max_size} pixels"
        )


def write_result(
    image: torch.Tensor,
    extension: str,
    labels: bool = False,
    affine: np.ndarray | torch.Tensor | None = None,
    provenance: dict | None = None,
) -> str:
    """Write a ``(1, X, Y)`` result to a new temporary file (MONAI Label deletes it once sent); returns its path.

    Args:
        image: a float image in [0, 1] (``labels=False``) or an integer label map (``labels=True``).
        extension: ``.nii.gz``, ``.nii``, ``.png`` or ``.dcm`` (a synthetic DICOM; images only).
        labels: store the values as uint8 labels rather than a [0, 1] image.
        affine: NIfTI geometry (the input's, so the result overlays it); PNG and DICOM have none.
        provenance: the generation record, which a DICOM carries (required for ``.dcm``).
    """
    if extension not in RESULT_EXTENSIONS:
        raise XRealInputError("result_extension", f"{extension!r} is not one of {sorted(RESULT_EXTENSIONS)}")
    handle, path = tempfile.mkstemp(prefix="monai_xreal_", suffix=extension)
    os.close(handle)
    target = Path(path)
    try:
        if extension == ".dcm":
            if labels or provenance is None:
                raise ValueError("a DICOM result is a generated image with its provenance record")
            created = datetime.now(timezone.utc)
            write_dicom(image, target, provenance, DicomIdentity(dicom_uid(), dicom_uid(), dicom_uid(), created))
        else:
            save_images(image[None].detach().cpu(), [target.name[: -len(extension)]], target.parent,
                        RESULT_EXTENSIONS[extension], labels=labels, affines=[affine])  # fmt: skip
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return str(target)
