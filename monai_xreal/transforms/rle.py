# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Run-length-encoded masks (SIIM-ACR, CheXmask and other absolute-start styles) to binary masks (MONAI transforms)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from monai_xreal.errors import XRealInputError

__all__ = ["RLEToMask", "RLEToMaskd"]


class RLEToMask(Transform):
    """Decode one or several run-length encodings into a ``(1, X, Y)`` float mask (their union).

    By default pixels are counted along MONAI's array order: the first spatial axis (the image's x) varies slowest,
    i.e. the image is flattened column by column. This is how the SIIM-ACR encodings were made
    (``mask.T.flatten()``), so they decode straight into the array ``LoadImage`` gives for the matching image.
    With ``row_major`` the runs go along image rows instead (a ``(Height, Width)`` array flattened in C order, as
    CheXmask's ``mask.flatten()``); the decoded ``(Height, Width)`` array is transposed into MONAI's ``(X, Y)``.

    Args:
        spatial_size: ``(X, Y)`` of the image the encoding was made on (SIIM: 1024 x 1024).
        relative: SIIM style, each start counted from the end of the previous run (0-based); ``False`` for absolute
            1-based starts (the common Kaggle / COCO-like style, and CheXmask's).
        argument: the name reported in errors.
        row_major: the encoding runs along image rows (CheXmask) rather than down columns (SIIM).

    An encoding of ``"-1"`` or ``""`` is an empty mask. A malformed encoding (odd count, negative or non-integer
    numbers, runs past the image) raises :class:`XRealInputError` rather than giving a wrong mask.
    """

    def __init__(
        self, spatial_size: Sequence[int], relative: bool = True, argument: str = "rle", *, row_major: bool = False
    ) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.relative = relative
        self.argument = argument
        self.row_major = row_major

    def __call__(self, encodings: str | Sequence[str]) -> torch.Tensor:
        flat = np.zeros(int(np.prod(self.spatial_size)), np.float32)
        for encoding in [encodings] if isinstance(encodings, str) else encodings:
            for start, stop in self.runs(str(encoding), flat.size):
                flat[start:stop] = 1.0
        return torch.from_numpy(self.unflatten(flat))[None]

    def unflatten(self, flat: np.ndarray) -> np.ndarray:
        """A flattened image (in this encoding's pixel order) as an ``(X, Y)`` array in MONAI's order."""
        if self.row_major:
            return np.ascontiguousarray(flat.reshape(self.spatial_size[::-1]).T)
        return flat.reshape(self.spatial_size)

    def runs(self, encoding: str, size: int | None = None) -> list[tuple[int, int]]:
        """The ``[begin, end)`` runs of one encoding in the flattened image; checks it is well formed."""
        size = int(np.prod(self.spatial_size)) if size is None else size
        text = encoding.strip()
        if text in ("", "-1"):
            return []
        try:
            numbers = [int(token) for token in text.split()]
        except ValueError as err:
            raise XRealInputError(self.argument, f"malformed run-length encoding: {err}") from err
        if len(numbers) % 2 or any(n < 0 for n in numbers):
            raise XRealInputError(
                self.argument, "malformed run-length encoding: needs non-negative (start, length) pairs"
            )
        runs, position = [], 0
        for start, length in zip(numbers[0::2], numbers[1::2]):
            begin = position + start if self.relative else start - 1
            if begin < 0 or begin + length > size:
                raise XRealInputError(
                    self.argument, f"run-length encoding runs past an image of {self.spatial_size} pixels"
                )
            runs.append((begin, begin + length))
            position = begin + length
        return runs


class RLEToMaskd(MapTransform):
    """Dictionary version of :class:`RLEToMask`: decodes ``keys`` and writes the mask to ``output_key``.

    Args:
        keys: the key holding the encoding(s).
        spatial_size: the encoded image's ``(X, Y)``, or the key of a data field holding it (per-image sizes,
            as in CheXmask).
        relative: see :class:`RLEToMask`.
        output_key: where the mask goes (default: replace the encoding).
        image_key: if this key is present, its spatial shape must equal the encoded size (a mask that does not fit
            its image is an error, never a silently misplaced mask).
        row_major: see :class:`RLEToMask` (``True`` for CheXmask).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | str,
        relative: bool = True,
        output_key: str | None = None,
        image_key: str | None = None,
        allow_missing_keys: bool = False,
        *,
        row_major: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_size, self.relative, self.output_key, self.image_key = (
            spatial_size,
            relative,
            output_key,
            image_key,
        )
        self.row_major = row_major

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            size = tuple(d[self.spatial_size] if isinstance(self.spatial_size, str) else self.spatial_size)
            if self.image_key in d and tuple(d[self.image_key].shape[1:]) != size:
                raise XRealInputError(
                    str(d.get("id", key)),
                    f"mask encoded for {size} does not fit image {tuple(d[self.image_key].shape[1:])}",
                )
            d[self.output_key or key] = RLEToMask(size, self.relative, str(key), row_major=self.row_major)(d[key])
        return d
