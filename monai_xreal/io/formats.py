# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The image formats generated images are written in: one table for the CLI, the writers and the Label server.

Pure data (no imports), so that ``--help`` can list the choices without loading MONAI.
"""

from __future__ import annotations

__all__ = ["ARRAY_FORMATS", "IMAGE_FORMATS", "format_of_extension"]

IMAGE_FORMATS: dict[str, str] = {"png": ".png", "nii.gz": ".nii.gz", "nii": ".nii", "dcm": ".dcm"}
"""format name -> file extension: 8-bit PNG, float32 NIfTI, 16-bit synthetic DICOM Secondary Capture."""

ARRAY_FORMATS: dict[str, str] = {name: ext for name, ext in IMAGE_FORMATS.items() if name != "dcm"}
"""The formats MONAI's ``SaveImage`` writes (DICOM has its own writer, :mod:`monai_xreal.io.dicom`)."""


def format_of_extension(extension: str) -> str | None:
    """The format name of a file extension (``".nii.gz"`` -> ``"nii.gz"``), ``None`` if it is not one of ours."""
    return {ext: name for name, ext in IMAGE_FORMATS.items()}.get(extension)
