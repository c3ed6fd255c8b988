# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The labelled image sets of a utility study: read from datalists, checked against each other before any training.

A datalist is MONAI's (``{"training": [...], "validation": [...], "test": [...]}``, paths relative to the file) or a
bare JSON list of items; every item needs an ``image`` and a ``labels`` dict ``{finding: 0 or 1}``, as the phantom
and simulation sets and the dataset adapters (MIMIC-CXR-JPG, CheXpert-style tables) write them. A finding missing
from an item's dict is negative there (:class:`monai_xreal.transforms.LabelsToVectord`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from monai_xreal.errors import XRealInputError, XRealInputWarning

__all__ = [
    "TEST_KEYS",
    "LabelledSet",
    "check_held_out",
    "check_test_set",
    "read_labelled_datalist",
    "study_classes",
]

# the lists a test datalist is read from when no key is named, first present wins
TEST_KEYS = ("test", "validation", "training")
# fewer positives (or negatives) than this in the test set: the label's CI is reported, with a warning
FEW_TEST_CASES = 5


@dataclass(frozen=True)
class LabelledSet:
    """One labelled image set.

    Attributes:
        argument: the option that named it (``--real``, ``--synthetic``, ``--test``), for messages.
        path: the datalist file.
        key: the datalist's list that was read (``""``: the file is a bare list).
        items: ``{"image": absolute path, "labels": {finding: 0 or 1}}`` per image, in datalist order.
        label_names: every finding any item names, in order of first appearance.
        labels_from_prompt: whether the labels were read from the items' prompts.
    """

    argument: str
    path: Path
    key: str
    items: tuple[dict, ...]
    label_names: tuple[str, ...]
    labels_from_prompt: bool = False

    def positives(self, classes: Sequence[str]) -> dict[str, int]:
        """The number of items positive for each of ``classes``."""
        return {name: sum(int(item["labels"].get(name, 0)) for item in self.items) for name in classes}

    def summary(self) -> dict:
        """Where the set came from and its size, for the report."""
        return {"datalist": str(self.path), "key": self.key or None, "num_images": len(self.items),
                "labels_from_prompt": self.labels_from_prompt}  # fmt: skip


def _read_list(path: Path, argument: str, key: str | None, default_keys: Sequence[str]) -> tuple[str, list]:
    """The datalist's list of items: ``key``'s, or the first of ``default_keys`` present."""
    if not path.is_file():
        raise XRealInputError(argument, f"no such file: {path}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise XRealInputError(argument, f"{path} is not valid JSON: {err}") from err
    if isinstance(content, list):
        return "", content
    if not isinstance(content, dict):
        raise XRealInputError(argument, f"{path} must hold a MONAI datalist (an object of lists) or a list of items")
    lists = [name for name, value in content.items() if isinstance(value, list)]
    if key is not None:
        if not isinstance(content.get(key), list):
            raise XRealInputError(argument, f"{path} has no list {key!r} (it has {lists or 'none'})")
        return key, content[key]
    present = [name for name in default_keys if isinstance(content.get(name), list)]
    for name in present:
        if content[name]:  # a split written empty (validation_fraction 0) is passed over
            return name, content[name]
    if present:
        return present[0], content[present[0]]
    raise XRealInputError(argument, f"{path} has none of the lists {list(default_keys)} (it has {lists or 'none'})")


def _label_value(value, where: str, name: str, argument: str) -> int:
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    raise XRealInputError(
        argument, f"{where}: label {name!r} is {value!r}, expected 0 or 1 (resolve uncertain labels first, e.g. the "
        "MIMIC adapter's uncertain policy)",
    )  # fmt: skip


def read_labelled_datalist(
    path: str | Path,
    argument: str,
    key: str | None = None,
    default_keys: Sequence[str] = ("training",),
    prompt_classes: Sequence[str] | None = None,
) -> LabelledSet:
    """Read and check one labelled set.

    Args:
        path: the datalist JSON file.
        argument: the option naming it, for messages (``--real``...).
        key: the list to read; ``None``: the first of ``default_keys`` that the file has.
        default_keys: the lists tried in order when ``key`` is ``None``.
        prompt_classes: read the labels of items without a ``labels`` dict from their ``prompt`` instead (the
            findings a prompt names are positive, the others of ``prompt_classes`` negative), as for a set made by
            ``monai-xreal generate-dataset``; ``None``: every item must have ``labels``.

    Raises:
        XRealInputError: a missing or invalid file, an empty list, an item without an image or labels, a label not
            0 or 1, or image files that do not exist (the count and the first named).
    """
    path = Path(path)
    key, entries = _read_list(path, argument, key, default_keys)
    where_list = f"{path} [{key}]" if key else str(path)
    if not entries:
        raise XRealInputError(argument, f"{where_list} is empty")
    items, names, missing, unlabelled = [], {}, [], 0
    from_prompt = False
    for index, entry in enumerate(entries):
        where = f"{where_list} item {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
            raise XRealInputError(argument, f"{where}: each item needs an 'image' path")
        labels = entry.get("labels")
        if labels is None and prompt_classes is not None and isinstance(entry.get("prompt"), str):
            from monai_xreal.metrics.pathology import labels_in_prompt

            named = set(labels_in_prompt(entry["prompt"], list(prompt_classes)))
            labels = {name: int(i in named) for i, name in enumerate(prompt_classes)}
            from_prompt = True
        if labels is None:
            unlabelled += 1
            continue
        if not isinstance(labels, Mapping):
            raise XRealInputError(argument, f"{where}: 'labels' must be a {{finding: 0 or 1}} dict")
        labels = {str(name): _label_value(value, where, str(name), argument) for name, value in labels.items()}
        for name in labels:
            names.setdefault(name, None)
        image = Path(entry["image"])
        image = (image if image.is_absolute() else path.parent / image).resolve()
        if not image.is_file():
            missing.append(str(image))
        items.append({"image": str(image), "labels": labels})
    if unlabelled:
        hint = " (or read them from the prompts: --labels-from-prompt)" if any(
            isinstance(e, dict) and "prompt" in e for e in entries) else ""  # fmt: skip
        raise XRealInputError(
            argument, f"{where_list}: {unlabelled} of {len(entries)} items have no 'labels' dict "
            f"({{finding: 0 or 1}}); a utility study needs every image's labels{hint}",
        )  # fmt: skip
    if missing:
        raise XRealInputError(argument, f"{where_list}: {len(missing)} image file(s) missing, e.g. {missing[0]}")
    return LabelledSet(argument, path, key, tuple(items), tuple(names), from_prompt)


def study_classes(sets: Sequence[LabelledSet], labels: Sequence[str] | None = None) -> list[str]:
    """The findings a study scores: ``labels``, which every set must name, or else the findings of the first set,
    which must be those of every other set.

    Raises:
        XRealInputError: a set lacking a named label, or label sets that differ (which set, which labels).
    """
    first = sets[0]
    if labels is not None:
        labels = list(dict.fromkeys(labels))
        if not labels:
            raise XRealInputError("--labels", "name at least one label")
        lacking = [f"{s.argument} lacks {[n for n in labels if n not in s.label_names]}" for s in sets
                   if any(n not in s.label_names for n in labels)]  # fmt: skip
        if lacking:
            raise XRealInputError("--labels", "; ".join(lacking))
        return labels
    reference = set(first.label_names)
    differences = []
    for other in sets[1:]:
        names = set(other.label_names)
        if names != reference:
            parts = [f"lacks {sorted(reference - names)}" if reference - names else "",
                     f"adds {sorted(names - reference)}" if names - reference else ""]  # fmt: skip
            differences.append(f"{other.argument} {' and '.join(p for p in parts if p)}")
    if differences:
        raise XRealInputError(
            "labels", f"the label sets differ from {first.argument}'s: {'; '.join(differences)} (choose the labels "
            "every set has with --labels)",
        )  # fmt: skip
    return list(first.label_names)


def check_test_set(test: LabelledSet, classes: Sequence[str], few: int = FEW_TEST_CASES) -> dict[str, dict[str, int]]:
    """Every label of ``classes`` must have positives and negatives in the test set, or it has no AUC (nor CI).

    Returns:
        ``{label: {"positives": n, "negatives": m}}``.

    Raises:
        XRealInputError: the labels without positives or without negatives, named with their counts.

    Warns:
        XRealInputWarning: labels with fewer than ``few`` positives or negatives (their CI is wide).
    """
    total = len(test.items)
    counts = {name: {"positives": n, "negatives": total - n} for name, n in test.positives(classes).items()}
    unscorable = [f"{name} ({c['positives']} positives, {c['negatives']} negatives)" for name, c in counts.items()
                  if not c["positives"] or not c["negatives"]]  # fmt: skip
    if unscorable:
        raise XRealInputError(
            test.argument, f"the test set ({total} images) cannot give an AUC or its CI for {', '.join(unscorable)}: "
            "each label needs positives and negatives (use a larger test set, or leave the label out with --labels)",
        )  # fmt: skip
    thin = [f"{name} ({min(c.values())})" for name, c in counts.items() if min(c.values()) < few]
    if thin:
        warnings.warn(
            f"{test.argument}: fewer than {few} positives or negatives in the test set for {', '.join(thin)}; "
            "their confidence intervals are wide", XRealInputWarning, stacklevel=2,
        )  # fmt: skip
    return counts


def check_held_out(test: LabelledSet, *training: LabelledSet) -> None:
    """The test images must not be training images of any set.

    Raises:
        XRealInputError: the number of shared images and one of them.
    """
    tested = {item["image"] for item in test.items}
    for other in training:
        shared = sorted(tested & {item["image"] for item in other.items})
        if shared:
            raise XRealInputError(
                test.argument, f"{len(shared)} test image(s) are also {other.argument} training images, e.g. "
                f"{shared[0]}; the test set must be held out",
            )  # fmt: skip
