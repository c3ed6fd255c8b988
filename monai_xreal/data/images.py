# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Finding a dataset's image file for an id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai_xreal.errors import XRealInputError

__all__ = ["find_image"]


def find_image(image_dir: str | Path | None, name: str, extensions: Sequence[str] = ("",)) -> str | None:
    """``image_dir/name<ext>`` for the first extension that exists; ``None`` without an ``image_dir``.

    Raises:
        XRealInputError: ``image_dir`` is given but holds no such file.
    """
    if image_dir is None:
        return None
    for ext in extensions:
        candidate = Path(image_dir) / f"{name}{ext}"
        if candidate.is_file():
            return str(candidate)
    raise XRealInputError(name, f"no image file {name}{'|'.join(extensions)} in {image_dir}")
