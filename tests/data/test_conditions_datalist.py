# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import json

import pytest

from monai_xreal import XRealInputError
from monai_xreal.data import load_conditions


def write(path, content):
    path.write_text(json.dumps(content))
    return path


def test_relative_paths_resolve_against_the_datalist_and_seeds_default(tmp_path, mask_files):
    datalist = write(tmp_path / "c.json", {"conditions": [
        {"id": "a", "anatomy": "anatomy.png", "pathology": "pathology.png", "prompt": "Edema"},
        {"id": "b", "anatomy": str(mask_files["anatomy"]), "seed": 99},
        {"prompt": "Cardiomegaly"},
    ]})  # fmt: skip
    items = load_conditions(datalist, base_seed=10)
    assert items[0] == {"id": "a", "prompt": "Edema", "seed": 10, "anatomy": str(mask_files["anatomy"].resolve()),
                        "pathology": str(mask_files["pathology"].resolve())}  # fmt: skip
    assert items[1]["seed"] == 99 and items[1]["prompt"] == ""
    assert items[2] == {"id": "condition_00002", "prompt": "Cardiomegaly", "seed": 12}


@pytest.mark.parametrize(
    "content,match",
    [
        ("not json", "not valid JSON"),
        ({"images": []}, "non-empty list"),
        ({"conditions": [{"id": "a", "anatomy": "missing.png"}]}, "no such file"),
        ({"conditions": [{"id": "a"}, {"id": "a"}]}, "duplicated"),
        ({"conditions": [{"id": "a", "mask": "x"}]}, "unknown field"),
        ({"conditions": [{"id": "a", "seed": -1}]}, "non-negative integer"),
        ({"conditions": [{"id": "a", "seed": "abc"}]}, "non-negative integer"),
        ({"conditions": [{"id": "a", "anatomy": "../outside.png"}]}, "is outside the dataset root"),
        ({"conditions": [{"id": "a", "anatomy": "/etc/passwd"}]}, "is outside the dataset root"),
        ({"conditions": [{"id": "a", "anatomy": 3}]}, "must be a file path"),
        ({"conditions": [{"id": "../a"}]}, "not a valid id"),
        ({"conditions": [{"id": ".hidden"}]}, "not a valid id"),
        ({"conditions": [{"id": "a", "prompt": ["x"]}]}, "prompt: must be text"),
    ],
)
def test_bad_datalists(tmp_path, content, match):
    path = tmp_path / "c.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(XRealInputError, match=match):
        load_conditions(path)
    with pytest.raises(XRealInputError, match="no such file"):
        load_conditions(tmp_path / "absent.json")


def test_a_link_out_of_the_root_is_refused(tmp_path, mask_files):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(mask_files["anatomy"])  # inside by name, outside once resolved
    datalist = write(root / "c.json", {"conditions": [{"id": "a", "anatomy": "link.png"}]})
    with pytest.raises(XRealInputError, match="outside the dataset root"):
        load_conditions(datalist)
    assert load_conditions(datalist, root=tmp_path)[0]["anatomy"] == str(mask_files["anatomy"].resolve())
