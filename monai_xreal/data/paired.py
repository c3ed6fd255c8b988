# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""One paired training sample, whoever made it (the phantom generator, the radiograph simulator): a radiograph with
its anatomy label map, pathology mask, labels and report."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from monai.data import Dataset

from monai_xreal.errors import XRealInputError
from monai_xreal.text.demographics import Demographics

__all__ = [
    "NORMAL_REPORT",
    "PAIRED_FOLDERS",
    "DrawnFinding",
    "PairedCXR",
    "PairedDataset",
    "choose_findings",
    "finding_chances",
    "paired_item",
    "paired_sample",
]  # fmt: skip

PAIRED_FOLDERS = ("images", "anatomy", "pathology")  # where a written set keeps each array

NORMAL_REPORT = {
    "findings": "The lungs are clear. The cardiomediastinal silhouette is within normal limits. "
    "No pleural effusion or pneumothorax.",
    "impression": "No acute cardiopulmonary process.",
}


@dataclass
class PairedCXR:
    """Arrays in MONAI's order (axis 0 = image x, left to right; axis 1 = y, top to bottom).

    Attributes:
        image: ``(1, X, Y)`` float32 radiograph in [0, 1], bone bright.
        anatomy: ``(1, X, Y)`` uint8 label map (:data:`monai_xreal.data.anatomy.ANATOMY_LABELS`): 1 the patient's
            right lung (image left), 2 the left lung, 3 heart, 4 upper mediastinum.
        pathology: ``(1, X, Y)`` uint8, 1 where any finding is.
        labels: ``{finding: 0 or 1}`` over the maker's findings plus ``"No Finding"``.
        report: ``{"findings": ..., "impression": ...}``.
        boxes: ``(N, 4)`` float32 ``(x_min, y_min, x_max, y_max)`` of each finding's mask; ``box_labels`` their names.
        details: per-finding facts (side, zone or lobe, cardiothoracic ratio ``ctr``, ...) and how it was made.
        demographics: ``{sex, age, race, view}`` (:class:`monai_xreal.text.demographics.Demographics`), or ``None``.
    """

    image: np.ndarray
    anatomy: np.ndarray
    pathology: np.ndarray
    labels: dict[str, int]
    report: dict[str, str]
    boxes: np.ndarray
    box_labels: list[str]
    details: dict
    demographics: dict | None = None


@dataclass
class DrawnFinding:
    """A finding in a sample: its name, ``(H, W)`` bool mask (rows, columns), report sentences and details."""

    name: str
    mask: np.ndarray
    findings: str
    impression: str
    details: dict


def paired_sample(
    image: np.ndarray,
    anatomy: np.ndarray,
    drawn: Sequence[DrawnFinding],
    finding_names: Sequence[str],
    details: dict,
    demographics: Demographics | None = None,
) -> PairedCXR:
    """Assemble a :class:`PairedCXR` from ``(H, W)`` arrays (rows, columns) and the findings drawn into it (and the
    patient's demographics, if any).

    The pathology mask is the union of the findings' masks, each finding's box its mask's extent; labels cover
    ``finding_names`` plus ``"No Finding"``; the report joins the findings' sentences (or is the normal report).
    Findings with an empty mask are left out: what cannot be seen is not reported.
    """
    drawn = [f for f in drawn if f.mask.any()]
    pathology = np.zeros(image.shape, np.uint8)
    boxes = []
    for finding in drawn:
        pathology |= finding.mask.astype(np.uint8)
        rows, columns = np.nonzero(finding.mask)
        boxes.append((columns.min(), rows.min(), columns.max() + 1, rows.max() + 1))
    names = [f.name for f in drawn]
    labels = {name: int(name in names) for name in finding_names}
    labels["No Finding"] = int(not names)
    report = NORMAL_REPORT if not drawn else {
        "findings": " ".join(f.findings for f in drawn),
        "impression": " ".join(f.impression for f in drawn),
    }  # fmt: skip
    return PairedCXR(
        image=image.T[None].astype(np.float32),
        anatomy=anatomy.T[None].astype(np.uint8),
        pathology=pathology.T[None],
        labels=labels,
        report=dict(report),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        box_labels=names,
        details={**details, **{f.name: f.details for f in drawn}},
        demographics=None if demographics is None else demographics.as_dict(),
    )


def paired_item(sample: PairedCXR, name: str, per_finding: bool = True) -> dict:
    """The non-image fields of a datalist item, with the adapters' keys: ``id``, ``labels``, ``report`` and, with
    ``per_finding``, ``boxes``, ``box_labels`` and ``details`` (one entry per finding, so they vary in length)."""
    item = {"id": name, "labels": sample.labels, "report": sample.report}
    if sample.demographics:
        item["demographics"] = dict(sample.demographics)
    if per_finding:
        item.update(boxes=sample.boxes.tolist(), box_labels=sample.box_labels, details=sample.details)
    return item


class PairedDataset(Dataset):
    """``num`` samples of ``maker`` made when indexed (no files), as data dicts with ``image``, ``anatomy``,
    ``pathology`` (``(1, X, Y)`` numpy arrays in MONAI order) and the fields of :func:`paired_item`.

    Args:
        maker: index -> :class:`PairedCXR` (a phantom generator, a radiograph simulator).
        num: number of samples.
        transform: MONAI transform applied to each dict.
        per_finding: include the per-finding fields; they vary in length, so the default batching cannot stack them.
        name: ids are ``<name>_<index:05d>``.
    """

    def __init__(
        self,
        maker: Callable[[int], PairedCXR],
        num: int,
        transform: Callable | None = None,
        per_finding: bool = False,
        name: str = "sample",
    ) -> None:
        self.maker, self.per_finding, self.name = maker, per_finding, name
        super().__init__(data=list(range(int(num))), transform=transform)

    def _transform(self, index: int):
        sample = self.maker(self.data[index])
        item = {"image": sample.image, "anatomy": sample.anatomy, "pathology": sample.pathology}
        item.update(paired_item(sample, f"{self.name}_{self.data[index]:05d}", self.per_finding))
        return item if self.transform is None else self.transform(item)


def finding_chances(probabilities: Mapping[str, float] | None, known: Sequence[str], default: float) -> dict:
    """Each finding's chance: ``default`` for all of ``known`` when ``probabilities`` is ``None``, else as given.

    Raises:
        XRealInputError: an unknown finding, or a chance outside [0, 1].
    """
    chances = dict.fromkeys(known, default) if probabilities is None else dict(probabilities)
    unknown = sorted(set(chances) - set(known))
    if unknown:
        raise XRealInputError("probabilities", f"unknown finding(s) {unknown}; known: {list(known)}")
    if any(not 0.0 <= p <= 1.0 for p in chances.values()):
        raise XRealInputError("probabilities", f"must lie in [0, 1], got {chances}")
    return chances


def choose_findings(
    rng: np.random.Generator, known: Sequence[str], chances: Mapping[str, float], forced: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The findings of one sample, in ``known``'s order: drawn independently with ``chances``, or ``forced``. One
    uniform draw per known finding is taken from ``rng`` either way, so what follows in ``rng`` does not depend on it.

    Raises:
        XRealInputError: ``forced`` names an unknown finding.
    """
    draws = rng.random(len(known))
    if forced is None:
        return tuple(name for name, u in zip(known, draws) if u < chances.get(name, 0.0))
    chosen = tuple(name for name in known if name in set(forced))
    if len(chosen) != len(set(forced)):
        raise XRealInputError("findings", f"unknown finding in {list(forced)}; known: {list(known)}")
    return chosen
