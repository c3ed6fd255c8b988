# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import numpy as np
import pytest
import torch
from monai.transforms import Compose
from monai.utils import set_determinism

from monai_xreal import XRealInputError
from monai_xreal.data.mimic import CHEXPERT_CLASSES
from monai_xreal.transforms.prompts import NO_FINDING_PROMPT, BuildPrompt, BuildPromptd

LABELS = {"Pleural Effusion": 1, "Atelectasis": 0, "Cardiomegaly": 1.0, "Edema": np.int64(1), "Pneumonia": -1}
REPORT = {
    "findings": "Heart size is  mildly enlarged.\nNo effusion.",
    "impression": "Mild cardiomegaly.",
    "indication": "",
}


def test_prompt_from_labels_joins_positive_classes_in_a_stable_order():
    assert BuildPrompt()(LABELS) == "Pleural Effusion, Cardiomegaly, Edema"  # the dict's order
    ordered = BuildPrompt(classes=CHEXPERT_CLASSES)
    assert ordered(LABELS) == "Cardiomegaly, Edema, Pleural Effusion"  # CheXpert's order
    assert BuildPrompt(classes=["Edema", "Cardiomegaly"])(LABELS) == "Edema, Cardiomegaly"  # restricted, reordered
    assert BuildPrompt()({"Cardiomegaly": torch.tensor(1), "Edema": torch.tensor(0.0)}) == "Cardiomegaly"
    assert BuildPrompt()({"Cardiomegaly": True, "Edema": "1"}) == "Cardiomegaly, Edema"


def test_no_positive_class_is_no_finding():
    assert NO_FINDING_PROMPT == "No Finding"
    assert BuildPrompt()({"Atelectasis": 0, "Pneumonia": -1}) == "No Finding"
    assert BuildPrompt()({}) == "No Finding"
    assert BuildPrompt(classes=["Atelectasis"])(LABELS) == "No Finding"
    assert BuildPrompt(no_finding="normal chest x-ray")({"Edema": 0}) == "normal chest x-ray"
    # CheXpert's own "No Finding" class is a class like the others
    both = {"No Finding": 1, "Support Devices": 1}
    assert BuildPrompt(classes=CHEXPERT_CLASSES)(both) == "No Finding, Support Devices"


def test_prompt_from_report_sections():
    assert BuildPrompt("report")(REPORT) == "Mild cardiomegaly."  # RoentGen: the impression
    both = BuildPrompt("report", sections=("findings", "impression"))
    assert both(REPORT) == "Heart size is mildly enlarged. No effusion. Mild cardiomegaly."
    assert BuildPrompt("report", sections=("indication", "impression"))(REPORT) == "Mild cardiomegaly."
    assert BuildPrompt("report", sections=("findings",))({"impression": "x"}) == ""
    raw = "FINAL REPORT\nFINDINGS: Clear lungs.\nIMPRESSION:\n  No acute process."
    assert both(raw) == "Clear lungs. No acute process."  # raw report text is split into sections first


def test_truncation_to_max_words():
    assert BuildPrompt("report", sections=("findings",), max_words=4)(REPORT) == "Heart size is mildly"
    assert BuildPrompt("report", max_words=40)(REPORT) == "Mild cardiomegaly."
    assert BuildPrompt(max_words=2)(LABELS) == "Pleural Effusion,"


def test_bad_arguments_and_inputs():
    with pytest.raises(XRealInputError, match="source"):
        BuildPrompt("caption")
    with pytest.raises(XRealInputError, match="drop_prob"):
        BuildPrompt(drop_prob=1.5)
    with pytest.raises(XRealInputError, match="max_words"):
        BuildPrompt(max_words=0)
    with pytest.raises(XRealInputError, match="labels: expected a dict"):
        BuildPrompt()(["Cardiomegaly"])
    with pytest.raises(XRealInputError, match="keys"):
        BuildPromptd(["labels", "report"])


def test_dropout_rate_and_reproducibility():
    transform = BuildPromptd("labels", drop_prob=0.25).set_random_state(seed=123)
    prompts = [transform({"labels": LABELS})["prompt"] for _ in range(2000)]
    dropped = prompts.count("")
    assert 0.22 < dropped / 2000 < 0.28  # binomial sd is ~0.01
    assert set(prompts) == {"", "Pleural Effusion, Cardiomegaly, Edema"}
    again = BuildPromptd("labels", drop_prob=0.25).set_random_state(seed=123)
    assert [again({"labels": LABELS})["prompt"] for _ in range(2000)] == prompts
    other = BuildPromptd("labels", drop_prob=0.25).set_random_state(seed=124)
    assert [other({"labels": LABELS})["prompt"] for _ in range(2000)] != prompts
    array = BuildPrompt(drop_prob=0.25).set_random_state(seed=123)
    assert [array(LABELS) for _ in range(2000)] == prompts  # the same draw in both versions
    assert {BuildPromptd("labels", drop_prob=1.0)({"labels": LABELS})["prompt"]} == {""}
    assert BuildPrompt(drop_prob=0.0)(LABELS) != ""


def test_dict_version_keys_and_compose_with_set_determinism():
    data = {"labels": LABELS, "report": REPORT, "id": "a"}
    out = BuildPromptd("report", output_key="text")(data)
    assert out["text"] == "Mild cardiomegaly." and out["id"] == "a" and "text" not in data
    assert BuildPromptd("findings_and_more", allow_missing_keys=True)(data) == data

    def run(seed):
        set_determinism(seed=seed)
        try:
            pipeline = Compose(
                [BuildPromptd("labels", drop_prob=0.5), BuildPromptd("report", "caption", drop_prob=0.5)]
            )
            return [tuple(pipeline(data)[k] for k in ("prompt", "caption")) for _ in range(200)]
        finally:
            set_determinism(seed=None)

    first = run(7)
    assert first == run(7) and first != run(8)
    assert 60 < sum(prompt == "" for prompt, _ in first) < 140
    assert {caption for _, caption in first} == {"", "Mild cardiomegaly."}
    seeded = Compose([BuildPromptd("labels", drop_prob=0.5)])
    draws = [seeded.set_random_state(seed=3)(data)["prompt"] for _ in range(5)]
    assert len(set(draws)) == 1  # re-seeding restarts the same stream


def test_demographics_go_before_the_prompt_and_drop_with_it():
    from monai_xreal.transforms import BuildPromptd

    item = {"labels": {"Cardiomegaly": 1}, "demographics": {"sex": "F", "age": 63, "race": "WHITE"}}
    assert BuildPromptd("labels", demographics_key="demographics")(item)["prompt"] == (
        "63 year old White female. Cardiomegaly")  # fmt: skip
    assert BuildPromptd("labels")(item)["prompt"] == "Cardiomegaly"  # not read unless asked
    assert BuildPromptd("labels", demographics_key="demographics")({"labels": {}})["prompt"] == "No Finding"
    assert BuildPromptd("labels", drop_prob=1.0, demographics_key="demographics")(item)["prompt"] == ""
    with pytest.raises(XRealInputError, match="demographics.age"):
        BuildPromptd("labels", demographics_key="demographics")({**item, "demographics": {"age": 200}})
