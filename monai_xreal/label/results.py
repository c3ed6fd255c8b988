# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Input checks and result files shared by the infer tasks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from monai_xreal.errors import XRealInputError
from monai_xreal.io import save_images
from monai_xreal.label.params import RESULT_EXTENSIONS, RequestTooLarge

__all__ = ["check_upload", "check_image_size", "write_result"]


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
    image: torch.Tensor, extension: str, labels: bool = False, affine: np.ndarray | torch.Tensor | None = None
) -> str:
    """Write a ``(1, X, Y)`` result to a new temporary file (MONAI Label deletes it once sent); returns its path.

    Args:
        image: a float image in [0, 1] (``labels=False``) or an integer label map (``labels=True``).
        extension: ``.nii.gz``, ``.nii`` or ``.png``.
        labels: store the values as uint8 labels rather than a [0, 1] image.
        affine: NIfTI geometry (the input's, so the result overlays it); PNG has none.
    """
    if extension not in RESULT_EXTENSIONS:
        raise XRealInputError("result_extension", f"{extension!r} is not one of {sorted(RESULT_EXTENSIONS)}")
    handle, path = tempfile.mkstemp(prefix="monai_xreal_", suffix=extension)
    os.close(handle)
    target = Path(path)
    try:
        save_images(image[None].detach().cpu(), [target.name[: -len(extension)]], target.parent,
                    RESULT_EXTENSIONS[extension], labels=labels, affines=[affine])  # fmt: skip
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return str(target)
