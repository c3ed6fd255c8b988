# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Demographic conditions: the datasets' spellings read into one set of categories, checked, and one prompt rule."""

from __future__ import annotations

import pytest

from monai_xreal.errors import XRealInputError
from monai_xreal.text.demographics import (
    AGE_GROUPS,
    RACES,
    SEXES,
    Demographics,
    balanced_demographics,
    with_demographics,
)


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"sex": "F", "age": 63, "race": "WHITE", "view": "pa"}, Demographics("female", 63, "White", "PA")),
        ({"sex": "M", "age": "71", "race": "BLACK/AFRICAN AMERICAN"}, Demographics("male", 71, "Black")),  # MIMIC-IV
        ({"race": "ASIAN - CHINESE", "age": 40.0}, Demographics(age=40, race="Asian")),
        ({"race": "HISPANIC/LATINO - PUERTO RICAN"}, Demographics(race="Hispanic")),
        (
            {"sex": "Female", "race": "Black or African American", "view": "AP"},  # CheXpert
            Demographics("female", race="Black", view="AP"),
        ),
        ({"sex": "Unknown", "race": "UNABLE TO OBTAIN", "age": None}, None),  # nothing known
        ({"age": float("nan"), "race": "White or Caucasian"}, Demographics(race="White")),  # a table's NaN: unknown
        ({"race": "Native American, non-Hispanic"}, Demographics(race="Other")),
        ({"race": "White, Hispanic"}, Demographics(race="Hispanic")),  # CheXpert's Hispanic ethnicity
        ({"age": __import__("numpy").int64(44)}, Demographics(age=44)),
        ({"age": float("inf")}, None),  # not a finite number: not known
    ],
)
def test_dataset_spellings_read_into_the_categories(values, expected):
    assert Demographics.from_mapping(values) == expected


@pytest.mark.parametrize(
    "values, message",
    [
        ({"sex": "x"}, "demographics.sex: unknown value 'x'; one of female, male"),
        ({"race": "martian"}, "demographics.race: unknown value"),
        ({"age": 130}, "demographics.age: must be in [0, 120]"),
        ({"age": -1}, "must be in [0, 120]"),
        ({"age": 40.5}, "whole number"),
        ({"age": "forty"}, "whole number"),
        ({"age": True}, "whole number"),
        ({"view": "oblique"}, "one of PA, AP, lateral"),
        ({"height": 180}, "unknown field(s) ['height']"),
        ("female", "must be an object"),
    ],
)
def test_bad_values_are_named(values, message):
    with pytest.raises(XRealInputError, match=None) as err:
        Demographics.from_mapping(values)
    assert message in str(err.value)


def test_one_prompt_rule():
    assert Demographics("female", 63, "White", "PA").prompt() == "63 year old White female, PA view."
    assert Demographics(age=50).prompt() == "50 year old patient."
    assert Demographics(view="AP").prompt() == "AP view."
    d = Demographics("male", 8)
    assert with_demographics("Cardiomegaly", d) == "8 year old male. Cardiomegaly"
    assert with_demographics("", d) == "8 year old male."
    assert with_demographics("Cardiomegaly", None) == "Cardiomegaly"
    assert Demographics.from_mapping(d.as_dict()) == d and d.as_dict() == {"sex": "male", "age": 8}


def test_groups_and_balanced_combinations():
    assert Demographics(age=17).group("age_group") == "0-17" and Demographics(age=80).group("age_group") == "80+"
    assert Demographics().group("race") == "unknown"
    combos = balanced_demographics(["sex", "age_group"])
    assert len(combos) == len(SEXES) * len(AGE_GROUPS) and len(set(combos)) == len(combos)
    assert sorted({(c.group("sex"), c.group("age_group")) for c in combos}) == sorted(
        (s, g) for s in SEXES for g, _, _ in AGE_GROUPS)  # fmt: skip
    assert len(balanced_demographics(["race"])) == len(RACES)
    for bad in ([], ["sex", "sex"], ["height"]):
        with pytest.raises(XRealInputError, match="balance_demographics"):
            balanced_demographics(bad)


def test_made_sets_carry_synthetic_demographics_in_their_datalist_items():
    from monai_xreal.data.paired import paired_item
    from monai_xreal.data.phantoms import PhantomGenerator
    from monai_xreal.text.demographics import synthetic_demographics

    first = [synthetic_demographics(3, i) for i in range(40)]
    assert first == [synthetic_demographics(3, i) for i in range(40)]  # reproducible per (seed, index)
    assert {d.sex for d in first} == set(SEXES) and {d.race for d in first} == set(RACES)
    assert all(18 <= d.age <= 90 and d.view == "PA" for d in first)
    item = paired_item(PhantomGenerator(size=64, seed=3)(5), "phantom_00005")
    assert item["demographics"] == synthetic_demographics(3, 5).as_dict()
    assert Demographics.from_mapping(item["demographics"]) == synthetic_demographics(3, 5)
