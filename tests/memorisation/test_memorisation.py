# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal memorisation``: copies of training phantoms (exact, shifted, re-exposed, noised) mixed into a set of
genuine phantoms are flagged, with their source as nearest training image, and the genuine ones are not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_xreal.cli.main import main
from monai_xreal.data.phantoms import PhantomGenerator
from monai_xreal.errors import XRealInputError
from monai_xreal.memorisation import DEFAULT_THRESHOLD, CopyDetector, TrainingFeatures, find_copies
from monai_xreal.memorisation.features import equalised_thumbnails

SIZE, TRAINING, GENUINE = 64, 24, 12


def _save(array: np.ndarray, path: Path) -> str:
    """``(rows, columns)`` in [0, 1] as an 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)
    return str(path)


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Moved by ``(dy, dx)`` pixels, the uncovered border filled with the edge (not wrapped around)."""
    padded = np.pad(image, ((abs(dy),) * 2, (abs(dx),) * 2), mode="edge")
    rows, columns = image.shape
    return padded[abs(dy) - dy : abs(dy) - dy + rows, abs(dx) - dx : abs(dx) - dx + columns]


# copy kind -> (training phantom it copies, how)
COPIES = {
    "exact": (0, lambda x, rng: x),
    "shifted": (3, lambda x, rng: _shift(x, 3, -2)),
    "gamma": (6, lambda x, rng: x**0.6),
    "contrast": (9, lambda x, rng: 0.7 * x + 0.2),
    "noised": (12, lambda x, rng: x + rng.normal(0, 0.05, x.shape)),
    "all": (15, lambda x, rng: _shift(x, -2, 2) ** 1.4 + rng.normal(0, 0.04, x.shape)),
}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict:
    """A phantom training set (the phantom datalist format: image and labels), and a generated set of genuine
    phantoms (another seed) and copies of training phantoms, as a MONAI datalist."""
    root = tmp_path_factory.mktemp("memorisation")
    training, originals = [], []
    generator = PhantomGenerator(SIZE, seed=0)
    for i in range(TRAINING):
        phantom = generator(i)
        originals.append(np.asarray(phantom.image[0]).T)  # rows first, as PNG stores it
        _save(originals[-1], root / "training" / "images" / f"phantom_{i:05d}.png")
        training.append({"image": f"images/phantom_{i:05d}.png", "labels": phantom.labels})
    (root / "training" / "datalist.json").write_text(json.dumps({"training": training, "validation": []}))
    genuine, copies, items = [], {}, []
    other = PhantomGenerator(SIZE, seed=1)
    for i in range(GENUINE):
        genuine.append(_save(np.asarray(other(i).image[0]).T, root / "generated" / f"genuine_{i}.png"))
    rng = np.random.default_rng(0)
    for kind, (source, change) in COPIES.items():
        path = root / "generated" / f"copy_{kind}.png"
        if kind == "exact":
            shutil.copyfile(root / "training" / "images" / f"phantom_{source:05d}.png", path)
        else:
            _save(change(originals[source], rng), path)
        copies[str(path)] = str(root / "training" / "images" / f"phantom_{source:05d}.png")
    for i, path in enumerate(genuine):  # copies mixed in among the genuine images
        items.append({"image": Path(path).name})
        if i % 2:  # GENUINE = 2 len(COPIES)
            items.append({"image": Path(list(copies)[i // 2]).name})
    (root / "generated" / "datalist.json").write_text(json.dumps({"training": items}))
    return {"root": root, "training": root / "training" / "datalist.json",
            "generated": root / "generated" / "datalist.json", "copies": copies, "genuine": genuine}  # fmt: skip


def test_copies_are_flagged_with_their_source_and_genuine_images_are_not(sets):
    report = find_copies(sets["generated"], sets["training"])
    assert len(report.checks) == GENUINE + len(COPIES)
    assert sorted(report.flagged) == sorted(sets["copies"])
    for copy, source in sets["copies"].items():
        check = report.checks[copy]
        assert check.nearest.image == source and check.score >= 0.75, (copy, check)
        assert len(check.neighbours) == 3 and check.neighbours[0].similarity >= check.neighbours[1].similarity
    assert report.checks[next(c for c in sets["copies"] if c.endswith("shifted.png"))].nearest.shift == (-2, 3)
    genuine_scores = [report.checks[p].score for p in sets["genuine"]]
    assert max(genuine_scores) < DEFAULT_THRESHOLD - 0.15  # a margin, not a near miss
    summary = report.summary()
    assert summary["flagged"] == len(COPIES) and summary["training_reference_share_above_threshold"] == 0.0


def test_cli_writes_the_report_and_figures(sets, tmp_path, capsys):
    out = tmp_path / "out" / "report.json"
    code = main(["memorisation", "--generated", str(sets["generated"]), "--training", str(sets["training"]),
                 "--output", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert sorted(report["flagged"]) == sorted(sets["copies"])
    assert report["summary"]["flagged"] == len(COPIES) and report["method"]["threshold"] == DEFAULT_THRESHOLD
    by_image = {item["image"]: item for item in report["images"]}
    for copy, source in sets["copies"].items():
        assert by_image[copy]["flagged"] and by_image[copy]["neighbours"][0]["image"] == source
        assert set(by_image[copy]["neighbours"][0]) == {"image", "similarity", "ssim", "shift"}
    assert not any(by_image[p]["flagged"] for p in sets["genuine"])
    for name in ("report_pairs.png", "report_summary.png"):
        assert (out.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(out.parent / name) as figure:
            assert figure.mode == "RGB" and min(figure.size) > 100
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json", "report_pairs.png", "report_summary.png"]
    assert f"{len(COPIES)} of {GENUINE + len(COPIES)} generated images flagged" in capsys.readouterr().out


def test_detector_on_tensors_is_invariant_to_re_exposure_and_small_shifts(sets):
    paths = sorted((sets["root"] / "training" / "images").glob("*.png"))
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255)[None] for p in paths])
    detector = CopyDetector(TrainingFeatures.from_thumbnails([str(p) for p in paths], equalised_thumbnails(images)))
    assert -0.5 < detector.typical < 0.95 and detector.reference_scores.max() < DEFAULT_THRESHOLD
    changed = torch.stack([images[2] ** 2.0, 0.5 * images[5] + 0.1, torch.roll(images[7], (2, 2), (-2, -1))])
    checks = detector.check(changed)
    assert [c.nearest.image for c in checks] == [str(paths[i]) for i in (2, 5, 7)]
    assert [c.flagged for c in checks] == [True] * 3 and checks[0].score > 0.99 and checks[1].score > 0.99
    assert checks[2].nearest.shift == (2, 2)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("not-json", "not valid JSON"),
    ("empty", "no non-empty list"),
    ("missing-image", "missing image file"),
    ("rgb", "3 channels"),
    ("one-training-image", "two images at least"),
])  # fmt: skip
def test_bad_input_is_one_line_error(sets, tmp_path, capsys, case, message):
    generated, training = sets["generated"], sets["training"]
    bad = tmp_path / "bad.json"
    if case == "missing":
        generated = tmp_path / "none.json"
    elif case == "not-json":
        bad.write_text("{not json")
        training = bad
    elif case == "empty":
        bad.write_text(json.dumps({"training": []}))
        generated = bad
    elif case == "missing-image":
        bad.write_text(json.dumps({"training": [{"image": "gone.png"}]}))
        generated = bad
    elif case == "rgb":
        rgb = np.repeat(np.asarray(Image.open(sets["genuine"][0]))[..., None], 3, -1)
        Image.fromarray(rgb).save(tmp_path / "rgb.png")
        bad.write_text(json.dumps({"training": [{"image": sets["genuine"][1]}, {"image": "rgb.png"}]}))
        generated = bad
    elif case == "one-training-image":
        bad.write_text(json.dumps({"training": [{"image": sets["genuine"][0]}]}))
        training = bad
    with pytest.raises(XRealInputError, match=message):
        find_copies(generated, training)
    out = tmp_path / "r.json"
    assert main(["memorisation", "--generated", str(generated), "--training", str(training), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar
    assert err.startswith("monai-xreal memorisation: error:") and message in err
    assert not out.exists()
