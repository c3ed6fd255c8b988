# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``generate-dataset --exclude-copies-of``: samples that copy a training image are made again with the next seed
(or dropped after three remakes), and the manifest says which, why and what they copied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import save_mask

from monai_xreal.cli.main import main
from monai_xreal.data import draw_anatomy
from monai_xreal.errors import XRealInputError
from monai_xreal.synthesis.dataset import MAX_REGENERATIONS, DatasetSpec, generate_dataset


def _spec(root: Path, out: str, **changes) -> DatasetSpec:
    return DatasetSpec(root / "conditions.json", changes.pop("samples", 3), root / out, bundle=root / "bundle",
                       batch_size=2, knobs={"num_inference_steps": 3}, **changes)  # fmt: skip


def _manifest(out: Path) -> dict[tuple, dict]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {(e["condition_id"], e["sample_index"]): e for e in map(json.loads, lines)}


@pytest.fixture(scope="module")
def setup(tiny_bundle, tmp_path_factory) -> Path:
    """Two conditions, a dataset made without the option, and a 'training set' of two of its images."""
    root = tmp_path_factory.mktemp("exclude")
    (root / "bundle").symlink_to(tiny_bundle)
    entries = [{"id": f"c{i}", "anatomy": save_mask(draw_anatomy((32, 32)), root, f"anatomy{i}").name,
                "prompt": ["", "Edema"][i]} for i in range(2)]  # fmt: skip
    (root / "conditions.json").write_text(json.dumps({"conditions": entries}), encoding="utf-8")
    generate_dataset(_spec(root, "plain"), "cpu")
    plain = _manifest(root / "plain")
    training = [{"image": f"../plain/{plain[key]['file']}"} for key in (("c0", 0), ("c1", 2))]
    (root / "training").mkdir()
    (root / "training" / "datalist.json").write_text(json.dumps({"training": training}), encoding="utf-8")
    return root


def test_copies_are_made_again_with_the_next_seed_and_recorded(setup):
    summary = generate_dataset(_spec(setup, "checked", exclude_copies_of=setup / "training" / "datalist.json"), "cpu")
    assert summary == {"generated": 6, "skipped": 0, "regenerated": 2, "dropped": 0, "images": 6}
    plain, checked = _manifest(setup / "plain"), _manifest(setup / "checked")
    for key, entry in checked.items():
        if key in (("c0", 0), ("c1", 2)):  # the training images: the same seed makes the same image
            (copy,) = entry["copies"]
            assert copy["seed"] == plain[key]["seed"] and copy["score"] > 0.99
            assert Path(copy["nearest"]).resolve() == (setup / "plain" / plain[key]["file"]).resolve()
            assert entry["seed"] == plain[key]["seed"] + 1 and entry["sha256"] != plain[key]["sha256"]
            sidecar = json.loads((setup / "checked" / entry["file"]).with_suffix(".json").read_text())
            assert sidecar["sampling"]["seed"] == entry["seed"] and sidecar["output"]["sha256"] == entry["sha256"]
        else:
            assert entry["copies"] == [] and entry["sha256"] == plain[key]["sha256"]
    datalist = json.loads((setup / "checked" / "datalist.json").read_text())["training"]
    assert len(datalist) == 6 and {i["seed"] for i in datalist} == {e["seed"] for e in checked.values()}
    info = json.loads((setup / "checked" / "dataset.json").read_text())
    assert info["exclude_copies"]["threshold"] == 0.6 and info["exclude_copies"]["regenerations"] == MAX_REGENERATIONS


def test_samples_copying_on_every_try_are_dropped_and_stay_dropped(setup):
    spec = _spec(setup, "dropped", samples=1, exclude_copies_of=setup / "training" / "datalist.json",
                 copy_threshold=-100.0)  # every image counts as a copy  # fmt: skip
    assert generate_dataset(spec, "cpu") == {"generated": 0, "skipped": 0, "regenerated": 0, "dropped": 2,
                                             "images": 0}  # fmt: skip
    for entry in _manifest(setup / "dropped").values():
        assert entry["dropped"] and entry["file"] is None and len(entry["copies"]) == MAX_REGENERATIONS + 1
        seeds = [c["seed"] for c in entry["copies"]]
        assert seeds == list(range(seeds[0], seeds[0] + MAX_REGENERATIONS + 1))
    assert json.loads((setup / "dropped" / "datalist.json").read_text()) == {"training": []}
    assert generate_dataset(spec, "cpu")["skipped"] == 2  # a restart does not retry them
    with pytest.raises(XRealInputError, match=r"other settings \(exclude_copies\)"):
        generate_dataset(_spec(setup, "dropped", samples=1, exclude_copies_of=spec.exclude_copies_of), "cpu")


def test_bad_options_are_one_line_errors(setup, tmp_path, capsys):
    base = ["generate-dataset", "--conditions", str(setup / "conditions.json"), "--samples-per-condition", "1",
            "--bundle", str(setup / "bundle"), "--output-dir", str(tmp_path / "out")]  # fmt: skip
    assert main([*base, "--copy-threshold", "0.5"]) == 2
    assert "copy-threshold: applies with --exclude-copies-of only" in capsys.readouterr().err
    assert main([*base, "--exclude-copies-of", str(tmp_path / "none.json")]) == 2
    assert "training: no such file" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()  # refused before anything is written
