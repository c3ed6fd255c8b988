# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A labels dict (``{class: 0 or 1}``, as the dataset adapters and phantoms give) as a multi-label target vector."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_xreal.errors import XRealInputError

__all__ = ["LabelsToVectord"]


class LabelsToVectord(MapTransform):
    """``data[key]`` (a ``{class: value}`` dict) to a float ``(len(classes),)`` tensor in the order of ``classes``.

    Values 1 / 1.0 / True are positive, 0 / 0.0 / False negative; a class missing from the dict is negative
    (datasets that leave unmentioned findings out). Uncertain labels (-1) must be resolved before (see the MIMIC
    adapter's ``uncertain`` policy).

    Args:
        keys: the one key holding the labels dict.
        classes: the output order.
        output_key: where the vector goes (default ``"label"``, MONAI's trainers' target key).
    """

    def __init__(self, keys: KeysCollection, classes: Sequence[str], output_key: Hashable = "label") -> None:
        super().__init__(keys)
        if len(self.keys) != 1 or not classes:
            raise XRealInputError("keys", "expected one labels key and a non-empty class list")
        self.classes, self.output_key = list(classes), output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        labels = d[self.keys[0]]
        if not isinstance(labels, Mapping):
            raise XRealInputError(str(self.keys[0]), f"expected a dict {{class: 0 or 1}}, got {type(labels).__name__}")
        values = []
        for name in self.classes:
            value = labels.get(name, 0)
            if value not in (0, 1):
                raise XRealInputError(str(self.keys[0]), f"{name}: {value!r} is not 0 or 1")
            values.append(float(value))
        d[self.output_key] = torch.tensor(values, dtype=torch.float32)
        return d
