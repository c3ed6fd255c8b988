# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Phantoms as a MONAI dataset (made on the fly) and as files with a MONAI datalist (``{"training", "validation"}``)."""

from __future__ import annotations

from collections.abc import Callable

from monai_xreal.data.paired import PAIRED_FOLDERS, PairedDataset, paired_item
from monai_xreal.data.phantoms.generator import PhantomGenerator

__all__ = ["PHANTOM_FOLDERS", "PhantomDataset", "phantom_item"]

PHANTOM_FOLDERS = PAIRED_FOLDERS
phantom_item = paired_item  # a phantom's datalist fields are any paired sample's


class PhantomDataset(PairedDataset):
    """``num`` phantoms made when indexed (no files), as data dicts with ``image``, ``anatomy``, ``pathology``
    (``(1, X, Y)`` numpy arrays in MONAI order) and the fields of :func:`phantom_item`.

    Args:
        num: number of phantoms.
        transform: MONAI transform applied to each dict.
        per_finding: include the per-finding fields; they vary in length, so the default batching cannot stack them.
        **generator_args: :class:`PhantomGenerator` arguments (``size``, ``seed``, ``probabilities``, ...).
    """

    def __init__(
        self, num: int, transform: Callable | None = None, per_finding: bool = False, **generator_args
    ) -> None:
        super().__init__(PhantomGenerator(**generator_args), num, transform, per_finding, name="phantom")
        self.generator = self.maker
