# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import gzip
import json

import numpy as np
import pytest
import torch
from monai.data import DataLoader, load_decathlon_datalist
from monai.transforms import Compose, LoadImaged
from PIL import Image

from monai_xreal import XRealInputError
from monai_xreal.cli.main import main
from monai_xreal.data.phantoms import (
    PHANTOM_FINDINGS,
    PhantomDataset,
    PhantomGenerator,
    load_box_prior,
    load_lung_shapes,
)
from monai_xreal.io import save_images
from monai_xreal.simulation import write_phantom_set
from monai_xreal.transforms import AnatomyToControllerInputd
from monai_xreal.visualize import ANATOMY_COLOURS, condition_grid, overlay_masks


@pytest.fixture(scope="module")
def generator():
    return PhantomGenerator(size=128, seed=7)


def extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    """(first, last + 1) along MONAI axis ``axis`` (0 = image x, 1 = image y) of a ``(X, Y)`` mask."""
    hits = np.flatnonzero(mask.any(1 - axis))
    return int(hits[0]), int(hits[-1]) + 1


def centroid_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[0].mean())


def measured_ctr(anatomy: np.ndarray) -> float:
    labels = anatomy[0]
    heart = extent(labels == 3, 0)
    chest = extent(np.isin(labels, (1, 2, 3)), 0)
    return (heart[1] - heart[0]) / (chest[1] - chest[0])


def test_real_lung_shapes_are_lung_pairs():
    shapes = load_lung_shapes()
    assert 400 <= len(shapes) <= 517  # 517 real masks, the non-frontal or broken ones left out
    pair = shapes.shapes[:50]
    columns = np.arange(pair.shape[-1])
    # channel 0 is the lung on the image's left in every kept shape
    left_centre = (pair[:, 0].sum(1) * columns).sum(1) / pair[:, 0].sum((1, 2))
    right_centre = (pair[:, 1].sum(1) * columns).sum(1) / pair[:, 1].sum((1, 2))
    assert np.all(left_centre < right_centre)


def test_lung_shapes_from_a_folder_leave_out_non_lung_masks(tmp_path):
    two = np.zeros((60, 80), np.uint8)
    two[10:50, 8:34] = 255
    two[12:52, 46:72] = 255
    one = np.zeros((60, 80), np.uint8)
    one[10:50, 10:70] = 255
    Image.fromarray(two).save(tmp_path / "pair.png")
    Image.fromarray(one).save(tmp_path / "single.png")
    shapes = load_lung_shapes(tmp_path)
    assert shapes.names == ["pair.png"] and shapes.shapes.shape[:2] == (1, 2)
    (tmp_path / "pair.png").unlink()
    load_lung_shapes.cache_clear()
    with pytest.raises(XRealInputError, match="no usable two-lung mask"):
        load_lung_shapes(tmp_path)
    with pytest.raises(XRealInputError, match="no such"):
        load_lung_shapes(tmp_path / "missing.zip")


def test_phantoms_are_deterministic_per_seed_and_index(generator):
    first = generator(3)
    later = PhantomGenerator(size=128, seed=7)
    later(10)  # making other phantoms first changes nothing
    again = later(3)
    for key in ("image", "anatomy", "pathology"):
        np.testing.assert_array_equal(getattr(first, key), getattr(again, key))
    assert first.report == again.report and first.labels == again.labels
    assert not np.array_equal(generator(4).image, first.image)
    assert not np.array_equal(PhantomGenerator(size=128, seed=8)(3).image, first.image)


@pytest.mark.parametrize("size", [64, 512])
def test_phantoms_at_the_smallest_and_largest_size(size):
    phantom = PhantomGenerator(size=size, seed=0)(0)
    assert phantom.image.shape == phantom.anatomy.shape == phantom.pathology.shape == (1, size, size)
    assert phantom.image.dtype == np.float32 and 0.0 <= phantom.image.min() and phantom.image.max() <= 1.0
    assert set(np.unique(phantom.anatomy)) == {0, 1, 2, 3, 4}


def test_label_convention_and_cardiothoracic_ratio(generator):
    for index in range(12):
        phantom = generator(index)
        labels = phantom.anatomy[0]
        # MONAI order: axis 0 is the image's x; the patient's right lung (1) lies on the image's left
        assert centroid_x(labels == 1) < centroid_x(labels == 4) < centroid_x(labels == 2)
        assert centroid_x(labels == 3) > centroid_x(labels == 4)  # the heart leans to the patient's left
        assert extent(labels == 4, 1)[1] <= extent(labels == 3, 1)[0] + 1  # upper mediastinum above the heart
        ctr = measured_ctr(phantom.anatomy)
        assert ctr == pytest.approx(phantom.details["ctr"], abs=0.02)
        if phantom.labels["Cardiomegaly"]:
            assert ctr > 0.52
        else:
            assert 0.37 < ctr < 0.5


def test_radiograph_intensities_follow_the_anatomy(generator):
    for index in range(5):
        phantom = generator(index, findings=[])
        image, labels = phantom.image[0], phantom.anatomy[0]
        lungs = image[np.isin(labels, (1, 2))].mean()
        assert lungs < image[labels == 3].mean() - 0.15  # dark lungs, white heart
        assert lungs < image[labels == 4].mean() - 0.15
        assert image[:4, :4].mean() < lungs  # air outside the body is darkest
        assert phantom.labels["No Finding"] == 1 and not phantom.pathology.any()
        assert phantom.report["impression"] == "No acute cardiopulmonary process."


@pytest.mark.parametrize("finding", PHANTOM_FINDINGS)
def test_each_finding_has_its_label_mask_and_report(generator, finding):
    for index in range(4):
        phantom = generator(index, findings=[finding])
        labels, mask = phantom.anatomy[0], phantom.pathology[0].astype(bool)
        assert phantom.labels[finding] == 1 and sum(phantom.labels.values()) == 1
        assert phantom.box_labels == [finding] and mask.any()
        x0, y0, x1, y1 = phantom.boxes[0]
        assert mask[int(x0) : int(x1), int(y0) : int(y1)].sum() == mask.sum()  # the box bounds the mask
        if finding == "Cardiomegaly":
            np.testing.assert_array_equal(mask, labels == 3)
            assert "enlarged" in phantom.report["findings"]
            continue
        assert np.isin(labels[mask], (1, 2)).all()  # inside the lungs
        side = phantom.details[finding]["side"]
        on_image_left = centroid_x(mask) < centroid_x(labels == 4)
        assert on_image_left == (side == "right")  # the patient's right is the image's left
        assert side.capitalize() in phantom.report["impression"]


def test_effusion_sits_at_the_base_with_a_meniscus(generator):
    for index in range(4):
        phantom = generator(index, findings=["Pleural Effusion"])
        labels, mask = phantom.anatomy[0], phantom.pathology[0].astype(bool)
        side = phantom.details["Pleural Effusion"]["side"]
        lung = labels == (1 if side == "right" else 2)
        assert extent(mask, 1)[1] >= extent(lung, 1)[1] - 1  # reaches the costophrenic angle
        # fluid level in each column where aerated lung lies above it
        xs = [x for x in np.flatnonzero(mask.any(1)) if np.flatnonzero(lung[x])[0] < np.flatnonzero(mask[x])[0]]
        levels = np.array([np.flatnonzero(mask[x])[0] for x in xs], np.float64)
        third = max(len(xs) // 3, 1)
        wall, medial = (levels[:third], levels[-third:]) if side == "right" else (levels[-third:], levels[:third])
        assert wall.mean() < medial.mean()  # the fluid climbs along the chest wall


def test_pneumothorax_has_no_lung_markings(generator):
    for index in range(4):
        phantom = generator(index, findings=["Pneumothorax"])
        image, labels, mask = phantom.image[0], phantom.anatomy[0], phantom.pathology[0].astype(bool)
        side = 1 if phantom.details["Pneumothorax"]["side"] == "right" else 2
        collapsed = (labels == side) & ~mask
        inner = mask.copy()  # away from the pleural line
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[2:, 1:-1] & mask[:-2, 1:-1] & mask[1:-1, 2:] & mask[1:-1, :-2]
        assert image[inner].mean() < image[collapsed].mean()


def test_findings_are_placed_at_the_real_box_positions(tmp_path):
    # a box table with one nodule box: every nodule is drawn there when it falls in a lung
    table = "Image Index,Finding Label,Bbox [x,y,w,h],,,,,\n"
    table += "a.png,Nodule,300,400,60,60\n" + "".join(f"{n}.png,{c},100,100,50,50\n" for n, c in enumerate(
        ["Effusion", "Pneumothorax", "Pneumonia"]))  # fmt: skip
    path = tmp_path / "BBox_List_2017.csv"
    path.write_text(table)
    assert len(load_box_prior(path).boxes["Nodule"]) == 1
    generator = PhantomGenerator(size=128, seed=0, nih_boxes=path)
    placed = 0
    for index in range(6):
        phantom = generator(index, findings=["Nodule"])
        if phantom.anatomy[0, int(330 / 1024 * 128), int(430 / 1024 * 128)] in (1, 2):
            x0, y0, x1, y1 = phantom.boxes[0]
            assert abs((x0 + x1) / 2 - 330 / 8) <= 3 and abs((y0 + y1) / 2 - 430 / 8) <= 3
            placed += 1
    assert placed >= 3


def test_real_box_prior_has_every_positioned_finding():
    prior = load_box_prior()
    counts = {name: len(boxes) for name, boxes in prior.boxes.items()}
    assert counts == {"Pleural Effusion": 153, "Pneumothorax": 98, "Consolidation": 423, "Nodule": 164}
    assert all(((b[:, :2] > 0) & (b[:, :2] < 1)).all() for b in prior.boxes.values())


def test_bad_generator_arguments_are_errors():
    with pytest.raises(XRealInputError, match="between 64 and 512"):
        PhantomGenerator(size=32)
    with pytest.raises(XRealInputError, match="unknown finding"):
        PhantomGenerator(probabilities={"Edema": 0.5})
    with pytest.raises(XRealInputError, match=r"\[0, 1\]"):
        PhantomGenerator(probabilities={"Nodule": 1.5})


def test_finding_probabilities(generator):
    always = PhantomGenerator(size=64, seed=1, probabilities={"Cardiomegaly": 1.0})
    assert all(always(i).labels == {**dict.fromkeys(PHANTOM_FINDINGS, 0), "Cardiomegaly": 1, "No Finding": 0}
               for i in range(3))  # fmt: skip
    counts = np.array([[generator(i).labels[n] for n in PHANTOM_FINDINGS] for i in range(60)]).mean(0)
    assert np.all(counts > 0.05) and np.all(counts < 0.4)  # 0.2 each


@pytest.mark.parametrize("fmt", ["png", "nii.gz"])
def test_written_set_reads_back_with_monai(tmp_path, fmt):
    datalist = write_phantom_set(tmp_path / "set", 6, size=64, seed=2, fmt=fmt, validation_fraction=0.34)
    raw = json.loads(datalist.read_text())
    assert len(raw["training"]) == 4 and len(raw["validation"]) == 2 and raw["size"] == [64, 64]
    items = load_decathlon_datalist(str(datalist), data_list_key="validation")
    loaded = LoadImaged(["image", "anatomy", "pathology"], ensure_channel_first=True)(items[0])
    phantom = PhantomGenerator(size=64, seed=2)(4)
    np.testing.assert_array_equal(loaded["anatomy"].numpy(), phantom.anatomy)
    np.testing.assert_array_equal(loaded["pathology"].numpy(), phantom.pathology)
    scale = 255.0 if fmt == "png" else 1.0
    np.testing.assert_allclose(loaded["image"].numpy() / scale, phantom.image, atol=1 / 255 + 1e-6)  # PNG truncates
    assert items[0]["labels"] == phantom.labels and items[0]["report"] == phantom.report
    with pytest.raises(XRealInputError, match="already holds"):
        write_phantom_set(tmp_path / "set", 2, size=64)


def test_a_failed_run_leaves_no_half_written_file_and_resumes(tmp_path, monkeypatch):
    from monai_xreal.synthesis import paired_set

    written = []

    def broken(images, names, folder, fmt="png", labels=False, affines=None):
        if len(written) == 4:  # the first phantom's three files, then the second's image
            raise OSError("disk full")
        written.append(names)
        return save_images(images, names, folder, fmt, labels, affines)

    monkeypatch.setattr(paired_set, "save_images", broken)
    with pytest.raises(OSError):
        write_phantom_set(tmp_path / "set", 3, size=64)
    assert sorted(p.relative_to(tmp_path / "set").as_posix() for p in (tmp_path / "set").rglob("*.png")) == [
        "anatomy/phantom_00000.png", "images/phantom_00000.png", "pathology/phantom_00000.png"]  # fmt: skip
    monkeypatch.undo()
    datalist = write_phantom_set(tmp_path / "set", 3, size=64)  # the same call finishes the set
    assert len(json.loads(datalist.read_text())["training"]) == 3


def test_phantom_dataset_composes_with_monai_transforms():
    dataset = PhantomDataset(4, transform=Compose([AnatomyToControllerInputd("anatomy", max_label=4)]), size=64)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 1, 64, 64) and batch["anatomy"].max() <= 1.0
    assert torch.equal(batch["anatomy"][0] * 4, torch.from_numpy(PhantomGenerator(size=64)(0).anatomy).float())


def test_overlay_and_grid(generator):
    phantom = generator(0, findings=["Nodule"])
    rgb = overlay_masks(phantom.image, phantom.anatomy, phantom.pathology, alpha=1.0)
    labels = phantom.anatomy[0].T
    inner = (labels == 3) & np.roll(labels == 3, 1, 0) & np.roll(labels == 3, -1, 0)
    assert (rgb[inner] == ANATOMY_COLOURS[3]).all()
    assert (rgb[phantom.pathology[0].T.astype(bool)] == (255, 0, 255)).all(-1).any()
    grid = condition_grid([(phantom.image, phantom.anatomy, phantom.pathology)] * 3, columns=2)
    assert grid.shape == (2 * 130 + 2, 4 * 130 + 2, 3)


def test_cli_writes_a_set_and_an_overview(tmp_path, capsys):
    grid = tmp_path / "overview.png"
    out = tmp_path / "set"
    args = ["phantoms", "--num-images", "3", "--size", "64", "--output-dir", str(out), "--grid", str(grid)]
    assert main(args + ["--probability", "Nodule=1"]) == 0
    items = json.loads((out / "datalist.json").read_text())
    assert all(item["labels"]["Nodule"] == 1 for item in items["training"] + items["validation"])
    assert Image.open(grid).size == (4 * 66 + 2, 2 * 66 + 2)
    assert main(args) == 2 and "already holds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["phantoms", "--num-images", "2", "--output-dir", str(tmp_path / "x"), "--probability", "Nodule"])
    assert exit_info.value.code == 2 and not (tmp_path / "x").exists()


def test_gzipped_box_table_is_read(tmp_path):
    path = tmp_path / "boxes.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("Image Index,Finding Label,Bbox [x,y,w,h],,,,,\na.png,Mass,10,20,30,40\n")
    assert load_box_prior(path).boxes["Nodule"].tolist() == [[25 / 1024, 40 / 1024, 30 / 1024, 40 / 1024]]
