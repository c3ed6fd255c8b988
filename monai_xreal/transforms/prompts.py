# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Text prompts from a data dict's labels or report, with classifier-free-guidance dropout (array and dict versions)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

from monai_xreal.errors import XRealInputError
from monai_xreal.text.demographics import Demographics, with_demographics
from monai_xreal.text.reports import report_sections

__all__ = ["NO_FINDING_PROMPT", "UNCONDITIONAL_PROMPT", "BuildPrompt", "BuildPromptd"]

NO_FINDING_PROMPT = "No Finding"
UNCONDITIONAL_PROMPT = ""  # what the sampler feeds the unconditional branch of classifier-free guidance


class BuildPrompt(RandomizableTransform):
    """A labels dict or a report to a prompt string; with probability ``drop_prob`` the empty prompt instead.

    From labels (XReal's convention): the names of the classes whose value is 1, joined with ``", "``
    (``"Cardiomegaly, Pleural Effusion"``), in the order of ``classes`` when given (other classes are then
    ignored), else in the dict's order; with no positive class the prompt is ``no_finding`` (``"No Finding"``).
    From a report (RoentGen uses the impression, Diff-CXR findings and impression): the non-empty ``sections``
    in the order given, joined with a space; a report may be a sections dict (as the adapters make) or raw text,
    which is split by :func:`~monai_xreal.text.reports.report_sections`. A report with none of the sections
    gives ``""``. ``max_words`` keeps the first words only (text encoders truncate at 77 CLIP / 512 BERT tokens).

    Dropout draws from this transform's own random state (``set_random_state``, or a seeded ``Compose``), so
    training runs are reproducible.

    Args:
        source: ``"labels"`` or ``"report"``.
        sections: report sections to use, in order.
        classes: label classes to consider, in prompt order; ``None`` takes the dict's own order.
        drop_prob: probability of returning :data:`UNCONDITIONAL_PROMPT` (classifier-free guidance training).
        max_words: keep at most this many words.
        no_finding: the prompt for labels with no positive class.
    """

    def __init__(
        self,
        source: str = "labels",
        sections: Sequence[str] = ("impression",),
        classes: Sequence[str] | None = None,
        drop_prob: float = 0.0,
        max_words: int | None = None,
        no_finding: str = NO_FINDING_PROMPT,
    ) -> None:
        if source not in ("labels", "report"):
            raise XRealInputError("source", f"{source!r} is not 'labels' or 'report'")
        if not 0.0 <= drop_prob <= 1.0:
            raise XRealInputError("drop_prob", f"{drop_prob} is not a probability in [0, 1]")
        if max_words is not None and max_words < 1:
            raise XRealInputError("max_words", f"{max_words} is not a positive word count")
        RandomizableTransform.__init__(self, prob=drop_prob)
        self.source, self.sections = source, tuple(sections)
        self.classes = None if classes is None else tuple(classes)
        self.max_words, self.no_finding = max_words, no_finding

    def text(self, data: Mapping | str) -> str:
        """The prompt without dropout."""
        prompt = self._from_labels(data) if self.source == "labels" else self._from_report(data)
        if self.max_words is not None:
            prompt = " ".join(prompt.split()[: self.max_words])
        return prompt

    def _from_labels(self, labels: Mapping | str) -> str:
        if not isinstance(labels, Mapping):
            raise XRealInputError("labels", f"expected a dict {{class: 0 or 1}}, got {type(labels).__name__}")
        names = labels if self.classes is None else [name for name in self.classes if name in labels]
        positive = [str(name) for name in names if _is_one(labels[name])]
        return ", ".join(positive) if positive else self.no_finding

    def _from_report(self, report: Mapping | str) -> str:
        if isinstance(report, str):
            report = report_sections(report)
        if not isinstance(report, Mapping):
            raise XRealInputError("report", f"expected a dict of sections or a str, got {type(report).__name__}")
        return " ".join(" ".join(str(report[s]).split()) for s in self.sections if str(report.get(s) or "").strip())

    def __call__(self, data: Mapping | str, randomize: bool = True) -> str:  # type: ignore[override]
        if randomize:
            self.randomize(None)
        return UNCONDITIONAL_PROMPT if self._do_transform else self.text(data)


def _is_one(value) -> bool:
    try:
        return float(value) == 1.0  # 1, 1.0, True, numpy and one-element torch values alike
    except (TypeError, ValueError):
        return False


class BuildPromptd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`BuildPrompt`: ``data[output_key] = prompt from data[key]``.

    Args:
        keys: the one key holding the labels dict or the report (``"labels"`` or ``"report"``).
        output_key: where the prompt goes.
        source: ``"labels"`` or ``"report"``; by default the key's name when it is one of them, else ``"labels"``.
        allow_missing_keys: leave a dict without the key unchanged instead of raising ``KeyError``.
        demographics_key: where an item's demographics object is (``None``: not read). When the item has one, its
            text (:meth:`monai_xreal.text.demographics.Demographics.prompt`) goes before the prompt; dropout drops
            both.

    The other arguments are :class:`BuildPrompt`'s.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: Hashable = "prompt",
        source: str | None = None,
        sections: Sequence[str] = ("impression",),
        classes: Sequence[str] | None = None,
        drop_prob: float = 0.0,
        max_words: int | None = None,
        no_finding: str = NO_FINDING_PROMPT,
        allow_missing_keys: bool = False,
        demographics_key: Hashable | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.demographics_key = demographics_key
        if len(self.keys) != 1:
            raise XRealInputError("keys", f"expected one key (labels or report), got {list(self.keys)}")
        if source is None:
            source = self.keys[0] if self.keys[0] in ("labels", "report") else "labels"
        self.builder = BuildPrompt(source, sections, classes, drop_prob, max_words, no_finding)
        RandomizableTransform.__init__(self, prob=self.builder.prob)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        self.randomize(None)
        for key in self.key_iterator(d):
            value: Mapping | str = d[key]  # type: ignore[assignment]
            if self._do_transform:
                d[self.output_key] = UNCONDITIONAL_PROMPT
                continue
            demographics = None
            if self.demographics_key is not None:
                demographics = Demographics.from_mapping(d.get(self.demographics_key), str(self.demographics_key))
            d[self.output_key] = with_demographics(self.builder.text(value), demographics)
        return d
