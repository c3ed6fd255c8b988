# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Bad input everywhere (hypothesis): every parser ends in a clean result or a one-line XRealInputError."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from monai_xreal.data import load_conditions
from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_mask
from monai_xreal.label.params import GenerateParams

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


def one_line(err: Exception) -> None:
    assert "\n" not in str(err) and str(err)


@FUZZ
@given(data=st.binary(max_size=4096), ext=st.sampled_from([".png", ".nii.gz", ".dcm", ".jpg", ".nii", ".bin"]))
def test_mask_files_of_random_bytes(tmp_path, data, ext):
    path = tmp_path / f"mask{ext}"
    path.write_bytes(data)
    try:
        mask = load_mask(path, "anatomy")
    except XRealInputError as err:
        one_line(err)
    else:
        assert mask.ndim == 3 and mask.shape[0] == 1


arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.int16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=40),
)  # float elements include NaN and infinities


@FUZZ
@given(anatomy=arrays, pathology=st.none() | arrays, prompt=st.text(max_size=300))
def test_mask_arrays_of_any_dtype_shape_and_value(tiny_pipeline, anatomy, pathology, prompt):
    try:
        conditions = tiny_pipeline.prepare_conditions(torch.as_tensor(anatomy), pathology if pathology is None
                                                      else torch.as_tensor(pathology), prompt)  # fmt: skip
    except XRealInputError as err:
        one_line(err)
    else:
        assert conditions[0].shape[-2:] == (32, 32)


@FUZZ
@given(value=st.floats(allow_nan=True, allow_infinity=True), shape=st.sampled_from([(1, 32, 32), (1, 5000, 1)]))
def test_non_finite_and_huge_masks(tiny_pipeline, value, shape):
    try:
        tiny_pipeline.prepare_conditions(torch.full(shape, value, dtype=torch.float64), None, "x")
    except XRealInputError as err:
        one_line(err)
    else:  # only a valid label map passes, at the pipeline's float32 precision
        assert float(np.float32(value)).is_integer() and 0 <= np.float32(value) <= 4


@FUZZ
@given(boxes=json_values)
def test_box_lists_of_any_json(tiny_pipeline, anatomy, boxes):
    try:
        params = GenerateParams.from_request({"boxes": boxes})
    except XRealInputError as err:
        one_line(err)
        return
    if params.boxes:
        try:
            tiny_pipeline.prepare_conditions(anatomy[0], [np.asarray(params.boxes, np.float32)], "x")
        except XRealInputError as err:
            one_line(err)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(alphabet=st.characters(), max_size=2000) | st.just("é" * 50000))
def test_prompts_of_any_unicode_and_length(tiny_pipeline, prompt):
    try:
        _, _, prompts = tiny_pipeline.prepare_conditions(None, None, prompt)
    except XRealInputError as err:  # text that is not valid Unicode (lone surrogates)
        one_line(err)
        return
    embedding = tiny_pipeline.encode_prompts(prompts)
    assert embedding.shape[0] == 1 and torch.isfinite(embedding).all()
    try:
        GenerateParams.from_request({"prompt": prompt})
    except XRealInputError as err:
        one_line(err)
        assert len(prompt) > 2000


traversals = st.sampled_from(["../outside.png", "/etc/passwd", "sub/../../outside.png", "./../outside.png",
                              "link.png", "a\\..\\..\\outside.png", "", "\x00.png", "inside.png"])  # fmt: skip


@FUZZ
@given(content=json_values, name=traversals, entry_id=st.text(max_size=20))
def test_datalists_of_any_json_and_paths_out_of_the_root(tmp_path_factory, content, name, entry_id):
    folder = tmp_path_factory.mktemp("root")
    outside = folder.parent / "outside.png"
    outside.write_bytes(b"x")
    (folder / "inside.png").write_bytes(b"x")
    (folder / "link.png").unlink(missing_ok=True)
    (folder / "link.png").symlink_to(outside)
    for document in (content, {"conditions": [{"id": entry_id, "anatomy": name}]}):
        path = folder / "c.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        try:
            items = load_conditions(path)
        except XRealInputError as err:
            one_line(err)
            continue
        for item in items:  # whatever is accepted is inside the root, with an id that is a plain file name
            assert all(str(item[k]).startswith(str(folder.resolve()) + "/") for k in ("anatomy", "pathology")
                       if k in item)  # fmt: skip
            assert "/" not in item["id"] and not item["id"].startswith(".")


def test_unsafe_condition_ids_write_nothing_outside_the_output(tiny_bundle, mask_files, tmp_path):
    (tmp_path / "work").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for entry_id in ("../../escaped", "/abs", ".hidden", "tab\tid"):
        conditions = mask_files["anatomy"].parent / "c.json"
        conditions.write_text(json.dumps({"conditions": [{"id": entry_id, "anatomy": "anatomy.png"}]}))
        done = subprocess.run([sys.executable, "-m", "monai_xreal", "generate-dataset", "--bundle", str(tiny_bundle),
                               "--conditions", str(conditions), "--samples-per-condition", "1",
                               "--output-dir", str(tmp_path / "work" / "out")],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 2 and "not a valid id" in done.stderr and "Traceback" not in done.stderr
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.name != "c.json")
    assert after == before


@pytest.mark.parametrize("text", ["\x07", "a\\b", "x" * 65, "\n"])
def test_dicom_patient_fields_are_refused_in_one_line(tmp_path, text):
    done = subprocess.run([sys.executable, "-m", "monai_xreal", "generate", "--output-dir", str(tmp_path / "o"),
                           "--format", "dcm", "--patient-name", text],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2 and "--patient-name" in done.stderr and len(done.stderr.splitlines()) == 1


def test_files_that_declare_huge_images_are_refused_without_reading_them(tmp_path):
    import struct
    import zlib

    import nibabel as nib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)  # 3.6 gigapixels, a few bytes of data
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))  # fmt: skip
    nifti = nib.Nifti1Image(np.zeros((2, 2), np.uint8), np.eye(4))
    nifti.header.set_data_shape((30000, 30000))  # the header claims 900 MB; the file holds 4 bytes
    truncated = tmp_path / "truncated.nii"
    truncated.write_bytes(nifti.header.binaryblock + b"\0" * 4 + b"\0" * 4)
    for path in (bomb, truncated):
        with pytest.raises(XRealInputError) as raised:
            load_mask(path, "anatomy")
        one_line(raised.value)
        assert "cannot read" in str(raised.value)
