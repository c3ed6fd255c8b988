# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Summaries of per-sample measures over any set of samples, and the evaluation's measures per demographic group.

An evaluation's samples carry their measures in ``sample.scores`` (``"dice"``: the segmenter's per-label Dice
``(L,)``, ``"lungs"``: the real lung judge's ``(3,)``, ``"heart"``: the heart judge's, ``"inside"``: the share of the
finding's change inside its mask); a summary of a subset is the summary the whole report uses, over that subset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from monai_xreal.metrics.adherence import dice_summary
from monai_xreal.metrics.judges import JudgeScores
from monai_xreal.text.demographics import GROUPINGS, Demographics

__all__ = ["anatomy_summary", "judge_summary", "measures_by_group"]


def anatomy_summary(samples: Sequence) -> dict:
    """The segmenter's Dice summary (:func:`~monai_xreal.metrics.adherence.dice_summary`) over ``samples``."""
    rows = [s.scores["dice"] for s in samples if "dice" in s.scores]
    return dice_summary(torch.stack(rows)) if rows else {"num_samples": 0}


def judge_summary(samples: Sequence) -> dict:
    """The independent judges' summary (:meth:`~monai_xreal.metrics.judges.JudgeScores.summary`) over ``samples``."""
    lungs = [s.scores["lungs"] for s in samples if "lungs" in s.scores]
    heart = [s.scores["heart"] for s in samples if "heart" in s.scores]
    return JudgeScores(torch.stack(lungs) if lungs else None, torch.stack(heart) if heart else None).summary()


def _group_measures(samples: Sequence) -> dict:
    result: dict = {"num_samples": len(samples)}
    if any("dice" in s.scores for s in samples):
        result["anatomy"] = anatomy_summary(samples)
    judges = judge_summary(samples)
    if judges:
        result["independent_judges"] = judges
    inside = [s.scores["inside"] for s in samples if not math.isnan(s.scores.get("inside", math.nan))]
    if inside:
        result["pathology_inside_fraction"] = sum(inside) / len(inside)
    return result


def measures_by_group(samples: Sequence, demographics: Sequence[Mapping | None]) -> dict:
    """``{grouping: {group: measures}}`` for every grouping of :data:`~monai_xreal.text.demographics.GROUPINGS` that
    some condition has (``demographics[sample.condition]``); samples without it are the ``"unknown"`` group. Empty
    when no condition has demographics."""
    known = [Demographics.from_mapping(d) if d else None for d in demographics]
    report = {}
    for by in GROUPINGS:
        groups: dict[str, list] = {}
        for sample in samples:
            d = known[sample.condition]
            groups.setdefault("unknown" if d is None else d.group(by), []).append(sample)
        if set(groups) != {"unknown"}:
            report[by] = {group: _group_measures(members) for group, members in sorted(groups.items())}
    return report
