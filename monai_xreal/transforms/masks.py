# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI transforms for the conditions: 2D single-channel masks, label-map checks, boxes, controller input."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.apps.detection.transforms.box_ops import convert_box_to_mask
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from monai_xreal.errors import XRealInputError

__all__ = [
    "AnatomyToControllerInput",
    "AnatomyToControllerInputd",
    "BoxesToMask",
    "BoxesToMaskd",
    "EnsureMask2D",
    "EnsureMask2Dd",
    "ValidateLabelMap",
    "ValidateLabelMapd",
]


class EnsureMask2D(Transform):
    """Check that a channel-first image is one 2D mask, dropping singleton extra axes (e.g. NIfTI's ``(W, H, 1)``).

    Args:
        argument: the name reported in errors (``"anatomy"``, ``"pathology"``).

    Raises:
        XRealInputError: more than one channel, or not two non-singleton spatial axes.
    """

    def __init__(self, argument: str = "mask") -> None:
        self.argument = argument

    def __call__(self, img):
        spatial = [s for s in img.shape[1:] if s != 1] if img.ndim > 3 else list(img.shape[1:])
        if img.shape[0] != 1:
            raise XRealInputError(self.argument, f"expected a single-channel mask, got {img.shape[0]} channels")
        if len(spatial) != 2:
            raise XRealInputError(self.argument, f"expected a 2D mask, got spatial shape {tuple(img.shape[1:])}")
        if 0 in spatial:
            raise XRealInputError(self.argument, f"the mask is empty: spatial shape {tuple(img.shape[1:])}")
        return img.reshape(1, *spatial)


class ValidateLabelMap(Transform):
    """Check a label map: finite, integer-valued, every label in the allowed set.

    Args:
        labels: allowed label values (from the bundle's metadata), e.g. ``{0, 1, 2, 3, 4}``.
        argument: the name reported in errors.
    """

    def __init__(self, labels: Sequence[int], argument: str = "anatomy") -> None:
        self.labels = sorted(int(v) for v in labels)
        self.argument = argument

    def __call__(self, img):
        values = torch.as_tensor(img)
        if not torch.isfinite(values).all():
            raise XRealInputError(self.argument, "contains NaN or infinite values")
        if values.is_floating_point() and not torch.equal(values, values.round()):
            raise XRealInputError(self.argument, "float mask with non-integer labels; a label map holds whole numbers")
        unknown = sorted(set(values.unique().long().tolist()) - set(self.labels))
        if unknown:
            raise XRealInputError(self.argument, f"labels {unknown} are not in the bundle's label set {self.labels}")
        return img


class AnatomyToControllerInput(Transform):
    """Anatomy label map to the anatomy controller's input: labels scaled to [0, 1] by the largest label.

    XReal's controller sees labels 0..4 divided by 4; ``max_label`` comes from the bundle's label set.
    Works on ``(1, H, W)`` and ``(B, 1, H, W)`` alike.
    """

    def __init__(self, max_label: int) -> None:
        if max_label < 1:
            raise ValueError(f"max_label must be at least 1, got {max_label}")
        self.max_label = max_label

    def __call__(self, img):
        return img.float() / self.max_label if torch.is_tensor(img) else np.asarray(img, np.float32) / self.max_label


class BoxesToMask(Transform):
    """Boxes to a binary pathology mask ``(1, *spatial_size)``.

    Boxes are ``(N, 4)`` as ``(start_0, start_1, end_0, end_1)`` along the array's spatial axes (MONAI's box
    convention, ends exclusive): for images read by MONAI's ``LoadImage`` the first spatial axis is the image's x
    (column), so dataset boxes ``(x_min, y_min, x_max, y_max)`` go in as they are. Boxes reaching past the image
    are clipped to it; a box wholly outside it is refused.
    """

    def __init__(self, spatial_size: Sequence[int]) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)

    def __call__(self, boxes) -> torch.Tensor:
        boxes = np.asarray(torch.as_tensor(boxes).cpu(), dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return torch.zeros((1, *self.spatial_size))
        if not np.isfinite(boxes).all() or (boxes[:, 2:] <= boxes[:, :2]).any():
            raise XRealInputError("pathology", f"invalid boxes {boxes.tolist()}: need finite start < end")
        clipped = np.round(np.clip(boxes, 0, np.tile(np.asarray(self.spatial_size, np.float32), 2)))
        if (clipped[:, 2:] <= clipped[:, :2]).any():
            raise XRealInputError("pathology", f"boxes {boxes.tolist()} lie outside the {self.spatial_size} image")
        masks = convert_box_to_mask(clipped, np.ones(len(boxes)), self.spatial_size, bg_label=0)
        return torch.as_tensor(np.asarray(masks).max(axis=0, keepdims=True), dtype=torch.float32)


class _PerKey(MapTransform):
    """Apply an array transform, made for each key (so errors can name it), to each key.

    The result replaces the key's value, or goes to ``output_key`` when one is given.
    """

    def __init__(
        self,
        keys: KeysCollection,
        allow_missing_keys: bool,
        make: Callable[[str], Transform],
        output_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transforms = {key: make(str(key)) for key in self.keys}
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key or key] = self.transforms[key](d[key])
        return d


class EnsureMask2Dd(_PerKey):
    """Dictionary version of :class:`EnsureMask2D`; errors name the key."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys, EnsureMask2D)


class ValidateLabelMapd(_PerKey):
    """Dictionary version of :class:`ValidateLabelMap`; errors name the key."""

    def __init__(self, keys: KeysCollection, labels: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys, lambda key: ValidateLabelMap(labels, key))


class AnatomyToControllerInputd(_PerKey):
    """Dictionary version of :class:`AnatomyToControllerInput`."""

    def __init__(self, keys: KeysCollection, max_label: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys, lambda key: AnatomyToControllerInput(max_label))


class BoxesToMaskd(_PerKey):
    """Dictionary version of :class:`BoxesToMask`.

    Args:
        keys: the key holding the ``(N, 4)`` boxes.
        spatial_size: the image's ``(X, Y)``.
        output_key: where the mask goes, e.g. ``"pathology"`` (default: replace the boxes).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        output_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys, lambda key: BoxesToMask(spatial_size), output_key)
