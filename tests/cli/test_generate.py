# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import save_mask
from PIL import Image

from monai_xreal.cli.main import main


def generate(tiny_bundle, out, *extra):
    return main(
        ["generate", "--bundle", str(tiny_bundle), "--num-inference-steps", "2", "--output-dir", str(out), *extra]
    )


@pytest.mark.parametrize("fmt", ["png", "nii.gz"])
def test_cli_writes_the_files_it_reports(tiny_bundle, mask_files, tmp_path, capsys, fmt):
    out = tmp_path / "out"
    code = generate(
        tiny_bundle, out, "--anatomy", str(mask_files["anatomy"]), "--pathology", str(mask_files["pathology"]),
        "--prompt", "Cardiomegaly", "--num-images", "3", "--batch-size", "2", "--seed", "10", "--format", fmt,
    )  # fmt: skip
    assert code == 0
    reported = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    files = sorted(p for p in out.iterdir())
    assert [str(p) for p in files] == sorted(reported) and len(files) == 6  # each image with its sidecar
    images = [p for p in files if p.suffix != ".json"]
    assert [p.name.split(".")[0] for p in images] == ["xreal_seed10", "xreal_seed11", "xreal_seed12"]
    assert all(p.with_name(p.name.split(".")[0] + ".json").is_file() for p in images)
    for path in images:
        if fmt == "png":
            array = np.asarray(Image.open(path))
            assert array.shape == (32, 32) and array.dtype == np.uint8
        else:
            array = np.asanyarray(nib.load(path).dataobj)
            assert array.shape == (32, 32) and array.min() >= 0 and array.max() <= 1


def test_cli_grid_shows_each_image_beside_its_requested_masks(tiny_bundle, mask_files, tmp_path):
    grid = tmp_path / "grid.png"
    code = generate(tiny_bundle, tmp_path / "out", "--anatomy", str(mask_files["anatomy"]), "--pathology",
                    str(mask_files["pathology"]), "--prompt", "Nodule", "--num-images", "3",
                    "--grid", str(grid))  # fmt: skip
    assert code == 0
    picture = np.asarray(Image.open(grid))
    assert picture.shape == (2 * 34 + 2, 4 * 34 + 2, 3)  # two (image, overlay) pairs a row; 32 px tiles, 2 px gaps
    magenta = (picture == (255, 0, 255)).all(-1)
    assert magenta[:, 34:68].any() and not magenta[:, :34].any()  # the pathology outline on the overlay only
    assert generate(tiny_bundle, tmp_path / "other", "--num-images", "1", "--grid", str(tmp_path / "g.jpg")) == 2


def test_cli_images_match_the_library(tiny_bundle, tiny_pipeline, mask_files, tmp_path):
    from monai.transforms import LoadImage

    out = tmp_path / "out"
    assert generate(tiny_bundle, out, "--anatomy", str(mask_files["anatomy"]), "--seed", "4", "--format", "nii.gz") == 0
    written = LoadImage(image_only=True, ensure_channel_first=True)(str(out / "xreal_seed4.nii.gz"))
    anatomy = LoadImage(image_only=True, ensure_channel_first=True)(str(mask_files["anatomy"]))
    expected = tiny_pipeline(anatomy=anatomy, num_inference_steps=2, seed=4)
    torch.testing.assert_close(written[None].as_tensor(), expected, atol=1e-5, rtol=0)


def bad_inputs(tmp_path, mask_files):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(rgb)
    volume = save_mask(np.zeros((1, 8, 8, 8), np.uint8), tmp_path, "volume", ".nii.gz")
    fractional = save_mask(np.full((1, 32, 32), 0.5, np.float32), tmp_path, "fractional", ".nii.gz")
    labels = save_mask(np.full((1, 32, 32), 9, np.uint8), tmp_path, "labels")
    empty = save_mask(np.zeros((1, 64, 64), np.uint8), tmp_path, "empty")
    small = save_mask(np.ones((1, 32, 32), np.uint8), tmp_path, "small")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    nan = save_mask(np.full((1, 32, 32), np.nan, np.float32), tmp_path, "nan", ".nii.gz")
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    anatomy = str(mask_files["anatomy"])
    return {
        "missing file": (["--anatomy", str(tmp_path / "nope.png")], "anatomy: no such file"),
        "unreadable": (["--anatomy", str(junk)], "anatomy: cannot read"),
        "rgb": (["--anatomy", str(rgb)], "anatomy: expected a single-channel mask"),
        "3d": (["--anatomy", str(volume)], "anatomy: expected a 2D mask"),
        "fractional": (["--anatomy", str(fractional)], "anatomy: float mask with non-integer labels"),
        "labels": (["--anatomy", str(labels)], "anatomy: labels [9] are not in the bundle's label set"),
        "nan": (["--anatomy", str(nan)], "anatomy: contains NaN"),
        "empty pathology": (
            ["--anatomy", anatomy, "--pathology", str(empty), "--prompt", "Edema"],
            "pathology: mask is empty",
        ),
        "no weights": (["--anatomy", anatomy, "--bundle", str(tmp_path)], "bundle: missing file"),
        "bad count": (["--num-images", "0"], "argument --num-images: must be a positive integer"),
        "bad format": (["--format", "jpg"], "argument --format: invalid choice"),
        "pathology size": (
            ["--anatomy", anatomy, "--pathology", str(small), "--prompt", "Edema"],
            "pathology: shape (32, 32) differs from the anatomy map's (64, 64)",
        ),
        "too many steps": (["--num-inference-steps", "100000"], "argument --num-inference-steps: 100000 is outside"),
        "not a number": (["--guidance-scale", "lots"], "argument --guidance-scale: 'lots' is not a number"),
        "negative seed": (["--seed", "-3"], "argument --seed: must be in [0"),
        "output is a file": (["--output-dir", str(a_file)], "argument --output-dir: "),
        "age": (["--age", "200"], "--age: must be in [0, 120], got 200"),
        "race": (["--race", "martian"], "--race: unknown value 'martian'; one of White, Black"),
    }


@pytest.mark.parametrize("case", ["missing file", "unreadable", "rgb", "3d", "fractional", "labels", "nan",
                                  "empty pathology", "no weights", "bad count", "bad format", "pathology size",
                                  "too many steps", "not a number", "negative seed", "output is a file", "age",
                                  "race"])  # fmt: skip
def test_cli_bad_input_is_one_line_exit_2_and_leaves_nothing(tiny_bundle, mask_files, tmp_path, capsys, case):
    args, message = bad_inputs(tmp_path, mask_files)[case]
    out = tmp_path / "out"
    argv = ["generate", "--bundle", str(tiny_bundle), "--num-inference-steps", "2", "--output-dir", str(out), *args]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def test_demographics_are_in_the_prompt_and_the_record_and_replay(tiny_bundle, tiny_pipeline, mask_files, tmp_path):
    out = tmp_path / "out"
    assert generate(tiny_bundle, out, "--anatomy", str(mask_files["anatomy"]), "--prompt", "Cardiomegaly",
                    "--sex", "F", "--age", "63", "--race", "WHITE", "--view", "PA", "--format", "nii.gz") == 0  # fmt: skip
    record = json.loads((out / "xreal_seed0.json").read_text())
    assert record["prompt"] == "63 year old White female, PA view. Cardiomegaly"
    assert record["demographics"] == {"sex": "female", "age": 63, "race": "White", "view": "PA"}
    written = nib.load(out / "xreal_seed0.nii.gz").get_fdata()
    again = tmp_path / "again"
    assert main(["generate", "--from-provenance", str(out / "xreal_seed0.json"), "--output-dir", str(again),
                 "--format", "nii.gz"]) == 0  # fmt: skip
    replayed = next(again.glob("*.json"))
    assert json.loads(replayed.read_text())["demographics"] == record["demographics"]
    np.testing.assert_array_equal(nib.load(next(again.glob("*.nii.gz"))).get_fdata(), written)


def test_failure_keeps_an_existing_output_folder_clean(tiny_bundle, mask_files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = generate(tiny_bundle, out, "--anatomy", str(mask_files["anatomy"]), "--pathology",
                    str(save_mask(np.zeros((1, 64, 64), np.uint8), tmp_path, "empty")), "--prompt", "Edema")  # fmt: skip
    assert code == 2 and [p.name for p in out.iterdir()] == ["keep.txt"]


def test_python_dash_m_is_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "monai_xreal", "generate", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--anatomy" in result.stdout and "--num-inference-steps" in result.stdout
    result = subprocess.run([sys.executable, "-m", "monai_xreal", "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_a_rerun_makes_only_what_is_missing_and_matches_an_uninterrupted_run(tiny_bundle, mask_files, tmp_path, capsys):
    masks = ["--anatomy", str(mask_files["anatomy"]), "--pathology", str(mask_files["pathology"]), "--prompt", "Edema"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert generate(tiny_bundle, whole, *masks, "--num-images", "4", "--batch-size", "2") == 0
    assert generate(tiny_bundle, resumed, *masks, "--num-images", "4", "--batch-size", "2") == 0
    (resumed / "xreal_seed1.png").unlink()  # a lost image, a damaged one, and a writer killed midway
    (resumed / "xreal_seed3.png").write_bytes(b"damaged")
    (resumed / ".partial-x").mkdir()
    capsys.readouterr()
    assert generate(tiny_bundle, resumed, *masks, "--num-images", "4", "--batch-size", "2") == 0
    assert "wrote 2 image(s)" in capsys.readouterr().out and "(2 already there)"
    assert sorted(p.name for p in resumed.iterdir()) == sorted(p.name for p in whole.iterdir())
    for name in ("xreal_seed0.png", "xreal_seed1.png", "xreal_seed3.png"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    # the same folder with other settings is refused, and nothing in it is touched
    before = {p.name: p.read_bytes() for p in resumed.iterdir()}
    assert generate(tiny_bundle, resumed, *masks[:4], "--prompt", "Nodule", "--num-images", "4") == 2
    assert "xreal_seed0.json was made with other prompt" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in resumed.iterdir()} == before


def test_doubtful_input_is_warned_in_one_line(tiny_bundle, tmp_path, capsys):
    background = save_mask(np.zeros((1, 48, 32), np.uint8), tmp_path, "background")
    assert generate(tiny_bundle, tmp_path / "out", "--anatomy", str(background), "--prompt", "a red bicycle") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert any("all background" in line for line in warnings)
    assert any("48x32 map is stretched" in line for line in warnings)
    assert any("names no finding" in line for line in warnings)


def test_sigterm_keeps_the_finished_images_of_a_huge_request_in_bounded_memory(tiny_bundle, tmp_path):
    """A billion images: batches are made as they are needed (no plan in memory), each image is written when it
    is finished, and SIGTERM stops the run with its finished images in place and nothing half-written."""
    import os
    import signal
    import time

    out = tmp_path / "out"
    argv = [sys.executable, "-m", "monai_xreal", "generate", "--bundle", str(tiny_bundle), "--num-inference-steps",
            "1", "--num-images", "1000000000", "--batch-size", "1", "--output-dir", str(out)]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, peak = time.monotonic() + 240, 0
    while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 3 and process.poll() is None:
        with open(f"/proc/{process.pid}/status") as status:
            peak = max(peak, *(int(line.split()[1]) for line in status if line.startswith("VmRSS")))
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "run the same command again to continue" in err and "Traceback" not in err
    images = sorted(out.glob("*.png"))
    assert len(images) >= 3 and all(p.with_suffix(".json").is_file() for p in images)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert peak < 2 * 2**20  # kB: well under 2 GiB (the plan of a billion batches alone would not fit)
    assert os.path.getsize(images[0]) > 0
