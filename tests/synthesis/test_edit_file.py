# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The bundle's edit.json through MONAI's bundle runner: the same edit as ``monai-xreal edit``."""

import json

import numpy as np
import pydicom
from conftest import write_cxr_dicom
from monai.bundle import run

from monai_xreal.cli.main import main

STORED = (np.arange(48 * 40).reshape(48, 40) * 5 % 4000 + 20).astype(np.uint16)  # rows x columns


def test_edit_config_runs_through_the_bundle_runner_as_the_command_does(tiny_bundle, tmp_path):
    source = write_cxr_dicom(tmp_path / "cr.dcm", STORED, "MONOCHROME2", window=(2000, 4000))
    configs = [str(tiny_bundle / "configs" / name) for name in ("common.json", "inference.json", "edit.json")]
    run(config_file=configs, bundle_root=str(tiny_bundle), image=str(source), boxes=[[[4, 6, 30, 40]]],
        prompts="Nodule", seeds=[3], edit_dir=str(tmp_path / "runner"), num_inference_steps=2)  # fmt: skip
    assert main(["edit", "--bundle", str(tiny_bundle), "--image", str(source), "--boxes", "4,6,30,40", "--prompt",
                 "Nodule", "--seed", "3", "--num-inference-steps", "2", "--output-dir", str(tmp_path / "cli")]) == 0  # fmt: skip
    by_runner = pydicom.dcmread(tmp_path / "runner" / "cr_edit_seed3.dcm").pixel_array
    by_command = pydicom.dcmread(tmp_path / "cli" / "cr_edit_seed3.dcm").pixel_array
    assert np.array_equal(by_runner, by_command) and not np.array_equal(by_runner, STORED)
    record = json.loads((tmp_path / "runner" / "cr_edit_seed3.json").read_text())
    assert record["sampling"]["num_inference_steps"] == 2 and record["edit"]["unchanged_outside_region"]
