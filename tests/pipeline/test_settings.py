# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""One definition of every sampling knob, read by the pipeline, the CLI, the Label task and provenance."""

import argparse
import subprocess
import sys

import pytest

from monai_xreal.errors import XRealInputError
from monai_xreal.pipeline.settings import KNOBS, XREAL_SAMPLING, SamplingSettings
from monai_xreal.seeding import MAX_SEED, batch_seeds, dataset_seed


def test_xreal_defaults_and_resolution_order():
    assert XREAL_SAMPLING == {"num_inference_steps": 100, "guidance_scale": 7.0, "anatomy_soft_value": 0.2,
                              "anatomy_step_fraction": 0.5, "eta": 1.0, "blending": "noise",
                              "anatomy_num_inference_steps": 0, "pathology_feather": 0.0}  # fmt: skip
    bundle = {"num_inference_steps": 50, "anatomy_step_fraction": 0.7}
    settings = SamplingSettings.resolve(bundle, scheduler="pndm", guidance_scale=3.0, eta=None)
    assert settings.as_dict() == {"num_inference_steps": 50, "guidance_scale": 3.0, "anatomy_soft_value": 0.2,
                                  "anatomy_step_fraction": 0.7, "eta": 1.0, "blending": "noise",
                                  "anatomy_num_inference_steps": 0, "pathology_feather": 0.0,
                                  "scheduler": "pndm"}  # fmt: skip
    assert SamplingSettings.from_record({**settings.as_dict(), "seed": 4, "batch_seeds": [4]}) == settings


@pytest.mark.parametrize(
    "knobs,name",
    [
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 2.5}, "num_inference_steps"),
        ({"num_inference_steps": 100000}, "num_inference_steps"),
        ({"guidance_scale": float("inf")}, "guidance_scale"),
        ({"anatomy_soft_value": 1.5}, "anatomy_soft_value"),
        ({"anatomy_step_fraction": -0.1}, "anatomy_step_fraction"),
        ({"eta": -1.0}, "eta"),
        ({"eta": True}, "eta"),
        ({"steps": 3}, "sampling"),
    ],
)
def test_out_of_range_knobs_are_named(knobs, name):
    with pytest.raises(XRealInputError) as err:
        SamplingSettings.resolve({}, **knobs)
    assert err.value.argument == name


def test_the_cli_and_the_label_task_take_every_knob_from_the_table():
    from monai_xreal.cli.options import add_sampling_options
    from monai_xreal.label.params import GenerateLimits, GenerateParams

    parser = argparse.ArgumentParser()
    add_sampling_options(parser)
    options = {action.dest: action for action in parser._actions}
    for knob in KNOBS:
        assert options[knob.name].option_strings == [knob.option] and knob.help in options[knob.name].help
    with pytest.raises(SystemExit):
        parser.parse_args(["--anatomy-step-fraction", "2"])
    params = GenerateParams.from_request({"steps": "12", "guidance_scale": 2, "anatomy_soft_value": "0.3"})
    assert (params.steps, params.guidance, params.anatomy_soft_value) == (12, 2.0, 0.3)
    for request in ({"steps": 1001}, {"anatomy_step_fraction": 1.2}, {"eta": -1}):
        with pytest.raises(XRealInputError):
            GenerateParams.from_request(request, GenerateLimits(max_steps=5000))
    with pytest.raises(XRealInputError, match="outside"):
        GenerateParams.from_request({"steps": 20}, GenerateLimits(max_steps=10))


def test_the_seed_scheme():
    assert batch_seeds(5, 3) == [5, 6, 7] and batch_seeds([9, 1], 2) == [9, 1]
    assert len(set(batch_seeds(None, 4))) == 4
    with pytest.raises(XRealInputError, match="2 seeds given for a batch of 3"):
        batch_seeds([1, 2], 3)
    with pytest.raises(XRealInputError, match="seeds must be in"):
        batch_seeds([MAX_SEED + 1], 1)
    # a dataset sample's seed depends on the run seed, the condition and the index only (and is stable)
    assert dataset_seed(0, "c1", 7, 3) == dataset_seed(0, "c1", 7, 3) != dataset_seed(0, "c1", 7, 4)
    assert dataset_seed(0, "c1", 7, 0) == 9222865328730917567  # the value 0.7.0 gave: datasets resume across versions


def test_reading_the_settings_loads_no_heavy_library():
    code = "import sys, monai_xreal.pipeline.settings, monai_xreal.seeding; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
