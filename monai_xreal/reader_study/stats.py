# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What the answers say: per-reader accuracy, sensitivity to fakes, unsure rate, and agreement between readers."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Mapping

import numpy as np

from monai_xreal.metrics.figures import bar_chart, stack_vertically
from monai_xreal.reader_study.store import ANSWERS

__all__ = ["ANSWER_COLUMNS", "answers_csv", "cohen_kappa", "reader_report", "report_figure"]

ANSWER_COLUMNS = ("study", "reader", "image", "sha256", "truth", "answer", "confidence", "answered_at")


def cohen_kappa(first: list[str], second: list[str], categories: Iterable[str] = ANSWERS) -> float | None:
    """Cohen's kappa of two raters' labels of the same items: ``(p_o - p_e) / (1 - p_e)``.

    ``None`` without items; 1.0 when both raters give one same label throughout (``p_e = 1``).
    """
    if len(first) != len(second):
        raise ValueError(f"{len(first)} and {len(second)} labels: the raters must label the same items")
    if not first:
        return None
    categories = list(categories)
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    expected = sum((first.count(c) / n) * (second.count(c) / n) for c in categories)
    if expected == 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def reader_report(answers: list[Mapping], readers: int, images: int, study: str | None = None) -> dict:
    """The study's statistics from :meth:`~monai_xreal.reader_study.store.StudyStore.answers`; ``study`` (the
    study id, SHA-256 of its frozen definition) is named first in the report.

    Per reader: ``answered``; ``accuracy`` (correct among the real/fake answers); ``sensitivity`` (fakes called
    fake, among the fakes the reader saw: "unsure" counts as missed); ``specificity`` (reals called real, among the
    reals seen); ``unsure_rate`` (unsure among all answers); ``mean_confidence`` (of the answers that gave one).
    Between readers: Cohen's kappa (real / fake / unsure) over the images both answered, per pair and its mean.
    Rates are ``None`` when their denominator is 0.
    """
    by_reader: dict[int, list[Mapping]] = {r: [] for r in range(1, readers + 1)}
    for answer in answers:
        by_reader.setdefault(int(answer["reader"]), []).append(answer)
    per_reader = {}
    for reader, given in by_reader.items():
        decided = [a for a in given if a["answer"] != "unsure"]
        fakes = [a for a in given if a["truth"] == "fake"]
        reals = [a for a in given if a["truth"] == "real"]
        confidences = [a["confidence"] for a in given if a["confidence"] is not None]
        per_reader[str(reader)] = {
            "answered": len(given),
            "accuracy": _rate(sum(a["answer"] == a["truth"] for a in decided), len(decided)),
            "sensitivity": _rate(sum(a["answer"] == "fake" for a in fakes), len(fakes)),
            "specificity": _rate(sum(a["answer"] == "real" for a in reals), len(reals)),
            "unsure_rate": _rate(sum(a["answer"] == "unsure" for a in given), len(given)),
            "mean_confidence": float(np.mean(confidences)) if confidences else None,
        }
    pairs = {}
    for first, second in itertools.combinations(sorted(by_reader), 2):
        a = {x["image"]: x["answer"] for x in by_reader[first]}
        b = {x["image"]: x["answer"] for x in by_reader[second]}
        shared = sorted(set(a) & set(b))
        pairs[f"{first}-{second}"] = {"images": len(shared),
                                      "kappa": cohen_kappa([a[i] for i in shared], [b[i] for i in shared])}  # fmt: skip
    kappas = [p["kappa"] for p in pairs.values() if p["kappa"] is not None]
    return {
        "study": study,
        "images": images,
        "readers": readers,
        "answers": len(answers),
        "per_reader": per_reader,
        "agreement": {"pairs": pairs, "mean_kappa": float(np.mean(kappas)) if kappas else None},
    }


def answers_csv(answers: list[Mapping], study: str) -> str:
    """Every answer as CSV text, one row each, columns :data:`ANSWER_COLUMNS` (the study id on every row)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=ANSWER_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for answer in answers:
        writer.writerow({**answer, "study": study})
    return text.getvalue()


def report_figure(report: Mapping) -> np.ndarray:
    """One bar chart per reader (accuracy, sensitivity, specificity, unsure rate) and one of pairwise kappa, as an
    ``(H, W, 3)`` uint8 image."""
    panels = []
    for reader, stats in report["per_reader"].items():
        values = {
            k: stats[k] for k in ("accuracy", "sensitivity", "specificity", "unsure_rate") if stats[k] is not None
        }
        panels.append(bar_chart(values, f"reader {reader}: {stats['answered']} answers", vmax=1.0))
    kappas = {pair: p["kappa"] for pair, p in report["agreement"]["pairs"].items() if p["kappa"] is not None}
    if kappas:  # kappa may be negative; the chart shows max(kappa, 0) and prints the value
        panels.append(bar_chart(kappas, "Cohen's kappa between readers", vmax=1.0))
    return stack_vertically(panels)


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None
