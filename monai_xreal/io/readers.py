# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Reading condition masks with MONAI's ``LoadImage`` (PNG, NIfTI, DICOM and whatever else its readers take)."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import LoadImage

from monai_xreal.errors import XRealInputError
from monai_xreal.transforms import EnsureMask2D

__all__ = ["load_mask"]


def load_mask(path: str | Path, argument: str, keep_meta: bool = False) -> torch.Tensor:
    """A mask file as a ``(1, H, W)`` tensor in MONAI's reader order.

    Args:
        path: PNG, NIfTI, DICOM or any file a MONAI reader takes.
        argument: the name reported in errors.
        keep_meta: return the reader's ``MetaTensor`` (affine, file name) rather than a plain tensor.

    Raises:
        XRealInputError: missing or unreadable file, or not a single-channel 2D image.
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError(argument, f"no such file: {path}")
    try:
        image = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    except Exception as err:  # readers raise many kinds of errors; all mean the same to the user
        raise XRealInputError(
            argument, f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    mask = EnsureMask2D(argument)(image)
    return mask if keep_meta else mask.as_tensor()
