# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal finetune``: a new bundle from the command line; every bad request one line and exit 2, before any
training and without writing the output bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import save_mask

from monai_xreal.cli.main import main


def _datalist(folder, images, labels=True):
    items = [{"image": str(p), **({"labels": {"Cardiomegaly": 1}} if labels else {})} for p in images]
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": items}))
    return path


@pytest.fixture()
def grey(tmp_path):
    return [save_mask((np.random.default_rng(i).random((1, 48, 48)) * 255).astype(np.uint8), tmp_path, f"g{i}")
            for i in range(2)]  # fmt: skip


def _run(*argv):
    try:
        return main(["finetune", *map(str, argv)])
    except SystemExit as usage:  # argparse's one-line usage error
        return usage.code


def test_finetune_command_writes_a_bundle(tiny_bundle, grey, tmp_path, capsys):
    wide = save_mask(np.full((1, 64, 48), 128, np.uint8), tmp_path, "wide")
    datalist = _datalist(tmp_path, [*grey, wide])
    code = _run("--bundle", tiny_bundle, "--datalist", datalist, "--output-bundle", tmp_path / "mine", "--epochs", 1,
                "--batch-size", 2, "--trainable", "lora", "--lora-rank", 2, "--device", "cpu")  # fmt: skip
    assert code == 0
    printed = capsys.readouterr()
    assert f"wrote {tmp_path / 'mine'}" in printed.out
    assert [line for line in printed.err.splitlines() if "not square (64x48)" in line]  # warned, in one line
    record = json.loads((tmp_path / "mine" / "configs" / "metadata.json").read_text())["fine_tuning"]
    assert record["trainable"] == "lora" and record["overrides"]["lora_rank"] == 2 and record["num_training"] == 3


@pytest.mark.parametrize(
    "case, message",
    [
        ("colour", "channels"),
        ("small", "smaller than the backbone's 32x32 grid"),
        ("no labels", "needs 'labels'"),
        ("no training list", "no non-empty list 'training'"),
        ("missing image", "cannot read"),
        ("no finetune config", "cannot be fine-tuned"),
        ("no unet weights", "no UNet weights"),
        ("output exists", "exists and is not empty"),
        ("bad trainable", "invalid choice"),
        ("bad rank", "--lora-rank"),
        ("bad demographics", "training[1].demographics.race: unknown value 'martian'"),
        ("no demographics", "no training item of"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(tiny_bundle, grey, tmp_path, capsys, case, message):
    bundle, options = tiny_bundle, []
    datalist = _datalist(tmp_path, grey)
    if case == "colour":
        datalist = _datalist(tmp_path, [save_mask(np.zeros((3, 48, 48), np.uint8), tmp_path, "rgb")])
    elif case == "small":
        datalist = _datalist(tmp_path, [save_mask(np.zeros((1, 16, 16), np.uint8), tmp_path, "small")])
    elif case == "no labels":
        datalist = _datalist(tmp_path, grey, labels=False)
    elif case == "no training list":
        datalist.write_text(json.dumps({"validation": [{"image": str(grey[0]), "labels": {}}]}))
    elif case == "missing image":
        datalist = _datalist(tmp_path, [tmp_path / "nowhere.png"])
    elif case in ("no finetune config", "no unet weights"):
        bundle = shutil.copytree(tiny_bundle, tmp_path / "old_bundle")
        (bundle / ("configs/finetune.json" if case == "no finetune config" else "models/model.pt")).unlink()
    elif case == "output exists":
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "x").write_text("")
    elif case == "bad trainable":
        options = ["--trainable", "bias"]
    elif case == "bad rank":
        options = ["--lora-rank", "0"]
    elif case in ("bad demographics", "no demographics"):
        options = ["--demographics"]
        if case == "bad demographics":
            items = json.loads(datalist.read_text())["training"]
            items[0]["demographics"], items[1]["demographics"] = {"sex": "F"}, {"race": "martian"}
            datalist.write_text(json.dumps({"training": items}))
    code = _run("--bundle", bundle, "--datalist", datalist, "--output-bundle", tmp_path / "mine", *options)
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1 and "Traceback" not in error, error
    assert case == "output exists" or not (tmp_path / "mine").exists()
    assert not (tmp_path / "mine.work").exists()  # refused before any training


def test_help_names_the_options():
    result = subprocess.run([sys.executable, "-m", "monai_xreal", "finetune", "--help"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0
    for option in (
        "--trainable",
        "--lora-rank",
        "--gradient-checkpointing",
        "--bf16",
        "--accumulation-steps",
        "--train-text-encoder",
        "--demographics",
    ):
        assert option in result.stdout
