# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Demographic conditions (RoentGen-v2, ChexGen): sex, age, race / ethnicity and view, as optional conditions.

One definition of the categories, their aliases in the public datasets' tables (MIMIC-IV's ``gender`` /
``anchor_age`` / ``race``, CheXpert's ``Sex`` / ``Age`` / ``AP/PA`` and ``PRIMARY_RACE``), the checks, and the one
rule that turns them into prompt text (:meth:`Demographics.prompt`), so that training (the datalists' items carry a
``demographics`` object), ``generate``, the Label task, provenance and ``generate-dataset`` read them alike.

The conditioning is in the prompt: ``"63 year old White female, PA view. Pleural Effusion"``. Classifier-free
guidance drops it with the rest of the prompt.
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from monai_xreal.errors import XRealInputError

__all__ = [
    "AGE_GROUPS",
    "DEMOGRAPHIC_FIELDS",
    "GROUPINGS",
    "RACES",
    "SEXES",
    "VIEWS",
    "Demographics",
    "balanced_demographics",
    "condition_prompt",
    "frontal_or_lateral",
    "synthetic_demographics",
    "with_demographics",
]

SEXES = ("female", "male")
RACES = ("White", "Black", "Asian", "Hispanic", "Other")
VIEWS = ("PA", "AP", "lateral")
MAX_AGE = 120
# (label, first age, last age): the groups a fairness study balances and reports over
AGE_GROUPS = (("0-17", 0, 17), ("18-39", 18, 39), ("40-59", 40, 59), ("60-79", 60, 79), ("80+", 80, MAX_AGE))
DEMOGRAPHIC_FIELDS = ("sex", "age", "race", "view")
# what a group is by: the categorical fields, and age by its group
GROUPINGS = ("sex", "age_group", "race", "view")

_SEX_ALIASES = {"f": "female", "female": "female", "woman": "female", "m": "male", "male": "male", "man": "male"}
# the public tables' spellings, matched on the lower-cased text before any " - " detail (MIMIC-IV: "ASIAN - CHINESE")
_RACE_ALIASES = {
    "white": "White", "caucasian": "White", "portuguese": "White", "white or caucasian": "White",
    "black": "Black", "black/african american": "Black", "black or african american": "Black",
    "african american": "Black", "black/african": "Black", "black/cape verdean": "Black",
    "black/caribbean island": "Black",
    "asian": "Asian", "asian, non-hispanic": "Asian", "asian, hispanic": "Asian",
    "hispanic": "Hispanic", "hispanic/latino": "Hispanic", "hispanic or latino": "Hispanic", "latino": "Hispanic",
    "south american": "Hispanic",
    "other": "Other", "native hawaiian or other pacific islander": "Other", "american indian/alaska native": "Other",
    "american indian or alaska native": "Other", "multiple race/ethnicity": "Other", "pacific islander": "Other",
    "native american": "Other", "native hawaiian": "Other", "american indian": "Other",
}  # fmt: skip
_VIEW_ALIASES = {"pa": "PA", "ap": "AP", "lateral": "lateral", "lat": "lateral", "ll": "lateral", "rl": "lateral"}
# values that mean "not known": the field is left out
_UNKNOWN = {"", "unknown", "unable to obtain", "patient declined to answer", "declined", "not specified", "nan", "na",
            "patient refused", "race and ethnicity unknown", "unknown, unknown"}  # fmt: skip


def _known(value) -> bool:
    if isinstance(value, float) and not math.isfinite(value):
        return False  # a table's NaN (pandas writes missing cells so): not known
    return value is not None and not (isinstance(value, str) and value.strip().lower() in _UNKNOWN)


def _category(value, aliases: Mapping[str, str], allowed: Sequence[str], argument: str) -> str:
    text = str(value).strip().lower()
    if aliases is _RACE_ALIASES and re.search(r",\s*hispanic$", text):
        return "Hispanic"  # CheXpert's "<race>, Hispanic": Hispanic ethnicity is its own group, as MIMIC-IV files it
    # the detail after " - " (MIMIC-IV: "ASIAN - CHINESE") or ", " (CheXpert: "White, non-Hispanic") is dropped
    for key in (text, text.split(" - ")[0].strip(), text.split(",")[0].strip()):
        if key in aliases:
            return aliases[key]
    raise XRealInputError(argument, f"unknown value {value!r}; one of {', '.join(allowed)} (or leave it out)")


@dataclass(frozen=True)
class Demographics:
    """A patient's demographics, each optional.

    Attributes:
        sex: ``"female"`` or ``"male"``.
        age: years, 0 to 120.
        race: race / ethnicity group, one of :data:`RACES`.
        view: ``"PA"``, ``"AP"`` or ``"lateral"``.
    """

    sex: str | None = None
    age: int | None = None
    race: str | None = None
    view: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping | None, argument: str = "demographics") -> Demographics | None:
        """Checked demographics from a datalist's or request's object (the datasets' spellings accepted, unknown
        values left out); ``None`` for ``None`` or an object with nothing known.

        Raises:
            XRealInputError: an unknown field or category, an age that is not a whole number in [0, 120].
        """
        if values is None:
            return None
        if not isinstance(values, Mapping):
            raise XRealInputError(argument, f"must be an object with {', '.join(DEMOGRAPHIC_FIELDS)}")
        unknown = sorted(set(values) - set(DEMOGRAPHIC_FIELDS))
        if unknown:
            raise XRealInputError(argument, f"unknown field(s) {unknown}; allowed: {list(DEMOGRAPHIC_FIELDS)}")
        found: dict = {}
        if _known(values.get("sex")):
            found["sex"] = _category(values["sex"], _SEX_ALIASES, SEXES, f"{argument}.sex")
        if _known(values.get("age")):
            found["age"] = _age(values["age"], f"{argument}.age")
        if _known(values.get("race")):
            found["race"] = _category(values["race"], _RACE_ALIASES, RACES, f"{argument}.race")
        if _known(values.get("view")):
            found["view"] = _category(values["view"], _VIEW_ALIASES, VIEWS, f"{argument}.view")
        return cls(**found) if found else None

    def as_dict(self) -> dict:
        """The known fields (for datalists and provenance)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def prompt(self) -> str:
        """The prompt text: ``"63 year old White female, PA view."`` with whatever is known."""
        who = " ".join(
            part for part in (None if self.age is None else f"{self.age} year old", self.race, self.sex) if part
        )
        if self.sex is None and who:
            who += " patient"
        parts = [p for p in (who, None if self.view is None else f"{self.view} view") if p]
        return (", ".join(parts) + ".") if parts else ""

    def group(self, by: str) -> str:
        """The group of one of :data:`GROUPINGS` (``"unknown"`` if not given)."""
        if by not in GROUPINGS:
            raise XRealInputError("group", f"must be one of {', '.join(GROUPINGS)}, got {by!r}")
        if by == "age_group":
            return "unknown" if self.age is None else next(g for g, low, high in AGE_GROUPS if low <= self.age <= high)
        value = getattr(self, by)
        return "unknown" if value is None else str(value)


def _age(value, argument: str) -> int:
    if isinstance(value, bool):
        raise XRealInputError(argument, f"must be a whole number of years, got {value!r}")
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.0+)?)\s*", value)
        if match is None:
            raise XRealInputError(argument, f"must be a whole number of years, got {value!r}")
        value = float(match.group(1))
    if isinstance(value, numbers.Integral):
        value = int(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        raise XRealInputError(argument, f"must be a whole number of years, got {value!r}")
    if not 0 <= value <= MAX_AGE:
        raise XRealInputError(argument, f"must be in [0, {MAX_AGE}], got {value}")
    return int(value)


def frontal_or_lateral(view: str) -> str | None:
    """A DICOM ViewPosition as one of :data:`VIEWS`, or ``None`` for any other (``"AP AXIAL"``, ``"LAO"``, ...)."""
    return _VIEW_ALIASES.get(str(view).strip().lower())


def with_demographics(prompt: str, demographics: Demographics | None) -> str:
    """The prompt the model is given: the demographics' text before the finding prompt."""
    text = "" if demographics is None else demographics.prompt()
    return " ".join(part for part in (text, prompt.strip()) if part)


def synthetic_demographics(seed: int, index: int) -> Demographics:
    """Synthetic demographics for made sample ``index`` of a set of ``seed`` (phantoms, simulated radiographs): sex,
    race uniform over the categories, age uniform in 18-90, PA view. Drawn from their own stream, so a set's images
    do not change with them; they label nothing in the image (a study of demographic conditioning on such a set
    tests the machinery, not the medicine)."""
    import numpy as np

    rng = np.random.default_rng([int(seed), int(index), 0xDE40])
    return Demographics(sex=SEXES[int(rng.integers(len(SEXES)))], age=int(rng.integers(18, 91)),
                        race=RACES[int(rng.integers(len(RACES)))], view="PA")  # fmt: skip


def condition_prompt(condition: Mapping) -> str:
    """The prompt the model is given for a condition (a conditions datalist's entry, a dataset's or an
    evaluation's): its ``demographics`` (if any) before its ``prompt``. Every consumer of conditions asks here."""
    return with_demographics(
        str(condition.get("prompt") or ""), Demographics.from_mapping(condition.get("demographics"))
    )


def balanced_demographics(by: Sequence[str]) -> list[Demographics]:
    """Every combination of the groups of ``by`` (fields of :data:`GROUPINGS`), each once: what ``generate-dataset
    --balance-demographics`` cycles through, so every group gets the same number of samples. An age group is
    represented by its middle age.

    Raises:
        XRealInputError: an unknown or repeated grouping.
    """
    by = list(by)
    if not by or len(set(by)) != len(by) or any(b not in GROUPINGS for b in by):
        raise XRealInputError("balance_demographics", f"name distinct groupings of {', '.join(GROUPINGS)}, got {by}")
    options = {
        "sex": [{"sex": s} for s in SEXES],
        "age_group": [{"age": (low + min(high, 90)) // 2} for _, low, high in AGE_GROUPS],
        "race": [{"race": r} for r in RACES],
        "view": [{"view": v} for v in VIEWS],
    }
    return [Demographics(**{k: v for part in combo for k, v in part.items()})
            for combo in itertools.product(*(options[b] for b in by))]  # fmt: skip
