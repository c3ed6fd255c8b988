# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Run-length-encoded lung and heart masks (CheXmask) to one anatomy label map, as MONAI transforms."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from monai_xreal.errors import XRealInputError
from monai_xreal.transforms.rle import RLEToMask

__all__ = ["ANATOMY_RLE_LABELS", "AnatomyRLEToLabelMap", "AnatomyRLEToLabelMapd"]

# the engine's anatomy labels; 4 (upper mediastinum) has no CheXmask mask. Painted in this order: later wins.
ANATOMY_RLE_LABELS = {"right_lung": 1, "left_lung": 2, "heart": 3}


def _spatial_shape(image) -> tuple[int, ...]:
    """An image's spatial shape without the trailing singleton axes some readers add (ITK: ``(1, X, Y, 1)``)."""
    shape = tuple(int(s) for s in image.shape[1:])
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


class AnatomyRLEToLabelMap(Transform):
    """Decode per-structure run-length encodings into one ``(1, X, Y)`` float label map.

    The encodings are CheXmask's: 1-based absolute starts over the ``(Height, Width)`` mask flattened row by row
    (see :class:`RLEToMask` with ``relative=False, row_major=True``). Labels follow the engine's convention:
    1 the patient's right lung (on the image's left), 2 the left lung, 3 the heart, 0 background; 4 (upper
    mediastinum) is never produced, CheXmask having no such mask.

    Overlaps: structures are painted in the order of ``labels`` and a later one wins, so where the heart overlaps a
    lung (CheXmask's heart and lung masks overlap in practically every image) the pixel is heart (3); where the two
    lungs overlap, left lung (2).

    Args:
        spatial_size: ``(X, Y) = (Width, Height)`` of the image the masks were made on.
        labels: structure key -> label value, in painting order (default ``ANATOMY_RLE_LABELS``).

    Raises:
        XRealInputError: a structure of ``labels`` is missing, or its encoding is malformed or runs past the image.

    Returns:
        ``(1, X, Y)`` float32 tensor holding whole-number labels.
    """

    def __init__(self, spatial_size: Sequence[int], labels: Mapping[str, int] | None = None) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.labels = dict(ANATOMY_RLE_LABELS if labels is None else labels)

    def __call__(self, encodings: Mapping[str, str]) -> torch.Tensor:
        missing = [name for name in self.labels if name not in encodings]
        if missing:
            raise XRealInputError("anatomy", f"no encoding for {missing}; got {sorted(encodings)}")
        flat = np.zeros(int(np.prod(self.spatial_size)), np.float32)
        for name, value in self.labels.items():
            decoder = RLEToMask(self.spatial_size, relative=False, argument=name, row_major=True)
            for start, stop in decoder.runs(str(encodings[name]), flat.size):
                flat[start:stop] = value
        return torch.from_numpy(RLEToMask(self.spatial_size, row_major=True).unflatten(flat))[None]


class AnatomyRLEToLabelMapd(MapTransform):
    """Dictionary version of :class:`AnatomyRLEToLabelMap`.

    Args:
        keys: the key holding the ``{structure: encoding}`` dict (``"anatomy_rle"`` from ``chexmask_datalist``).
        spatial_size: the encoded ``(X, Y)``, or the key of a data field holding it (CheXmask sizes vary per image).
        output_key: where the label map goes, e.g. ``"anatomy"`` (default: replace the encodings).
        image_key: if this key is present, its spatial shape must equal the encoded size: a mask that does not fit
            its image (e.g. masks of CheXmask's 1024 x 1024 preprocessed table on an original-resolution image) is an
            error, never a silently misplaced mask.
        labels: see :class:`AnatomyRLEToLabelMap`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | str = "spatial_size",
        output_key: str | None = None,
        image_key: str | None = None,
        labels: Mapping[str, int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_size, self.output_key, self.image_key, self.labels = spatial_size, output_key, image_key, labels

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            size = d[self.spatial_size] if isinstance(self.spatial_size, str) else self.spatial_size
            size = tuple(int(s) for s in size)
            if self.image_key in d and _spatial_shape(d[self.image_key]) != size:
                raise XRealInputError(
                    str(d.get("id", key)),
                    f"anatomy masks encoded for {size} do not fit image {_spatial_shape(d[self.image_key])}",
                )
            d[self.output_key or key] = AnatomyRLEToLabelMap(size, self.labels)(d[key])
        return d
