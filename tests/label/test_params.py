# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The MONAI Label app's request checks, bundle resolution and result files (no MONAI Label needed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from monai_xreal.errors import XRealInputError
from monai_xreal.io import save_images
from monai_xreal.label import APP_DIR, GenerateLimits, GenerateParams, RequestTooLarge, writable_app_dir
from monai_xreal.label.bundles import MODELS, resolve_bundle, resolve_models
from monai_xreal.label.results import check_image_size, check_upload, write_result


def test_params_fill_defaults_and_accept_numeric_text_and_aliases():
    params = GenerateParams.from_request(
        {"model": "xreal_generate", "prompt": "Cardiomegaly", "seed": "7", "num_inference_steps": "12",
         "guidance_scale": 3, "eta": "0.5", "boxes": [1, 2, 30, 40], "result_extension": ".png", "client_id": "x",
         "blending": "data", "pathology_feather": "1.5"}
    )  # fmt: skip
    assert params.echo() == {
        "prompt": "Cardiomegaly", "seed": 7, "steps": 12, "guidance": 3.0, "eta": 0.5, "anatomy_soft_value": None,
        "anatomy_step_fraction": None, "blending": "data", "anatomy_num_inference_steps": None,
        "pathology_feather": 1.5, "scheduler": None, "boxes": [[1.0, 2.0, 30.0, 40.0]], "demographics": {},
        "output_grid": "input", "result_extension": ".png",
    }  # fmt: skip
    drawn = GenerateParams.from_request({})
    assert 0 <= drawn.seed < 2**31 and drawn.steps is None and drawn.result_extension == ".nii.gz"


@pytest.mark.parametrize(
    "request_, error, reason",
    [
        ({"steps": "ten"}, XRealInputError, "steps: must be an integer, got 'ten'"),
        ({"steps": 2.5}, XRealInputError, "steps: must be an integer"),
        ({"steps": True}, XRealInputError, "steps: must be an integer, got bool"),
        ({"steps": 0}, XRealInputError, "steps: 0 is outside [1, 1000]"),
        ({"steps": 3, "num_inference_steps": 4}, XRealInputError, "steps: given twice"),
        ({"guidance": "nan"}, XRealInputError, "guidance: must be finite"),
        ({"guidance": [1]}, XRealInputError, "guidance: must be a number, got list"),
        ({"seed": -1}, XRealInputError, "seed: -1 is outside"),
        ({"prompt": 3}, XRealInputError, "prompt: must be text"),
        ({"prompt": "x" * 2001}, RequestTooLarge, "prompt: 2001 characters"),
        ({"scheduler": "euler"}, XRealInputError, "scheduler: unknown scheduler 'euler'"),
        ({"blending": "pixels"}, XRealInputError, "blending: must be one of noise, data, got 'pixels'"),
        ({"pathology_feather": 100}, XRealInputError, "pathology_feather: 100 is outside [0.0, 64.0]"),
        ({"output_grid": "world"}, XRealInputError, "output_grid: must be 'input' or 'model'"),
        ({"result_extension": ".jpg"}, XRealInputError, "result_extension: '.jpg' is not one of"),
        ({"boxes": "1,2,3,4"}, XRealInputError, "boxes: must be a list"),
        ({"boxes": [[1, 2, 3]]}, XRealInputError, "boxes: box 0 must be"),
        ({"boxes": [[5, 5, 1, 1]]}, XRealInputError, "boxes: box 0 [5.0, 5.0, 1.0, 1.0] needs x_min < x_max"),
        ({"boxes": [[0, 0, "a", 1]]}, XRealInputError, "boxes[0]: must be a number"),
        ({"boxes": [[0, 0, 1, 1]] * 65}, RequestTooLarge, "boxes: 65 boxes"),
        ({"age": 200}, XRealInputError, "demographics.age: must be in [0, 120]"),
        ({"sex": "x"}, XRealInputError, "demographics.sex: unknown value 'x'"),
        ({"demographics": {"age": 3}, "sex": "F"}, XRealInputError, "demographics: given both"),
        ({"demographics": {"weight": 3}}, XRealInputError, "unknown field(s) ['weight']"),
    ],
)
def test_params_refuse_bad_values_in_one_line_naming_the_parameter(request_, error, reason):
    with pytest.raises(error) as raised:
        GenerateParams.from_request(request_)
    assert reason in str(raised.value) and "\n" not in str(raised.value)


def test_demographics_flat_or_nested_go_before_the_prompt():
    flat = GenerateParams.from_request({"prompt": "Cardiomegaly", "sex": "M", "age": "70", "race": "ASIAN - KOREAN"})
    nested = GenerateParams.from_request({"prompt": "Cardiomegaly", "demographics": {"sex": "male", "age": 70,
                                                                                     "race": "Asian"}})  # fmt: skip
    assert flat.demographics == nested.demographics == {"sex": "male", "age": 70, "race": "Asian"}
    assert flat.model_prompt == "70 year old Asian male. Cardiomegaly"
    assert GenerateParams.from_request({"prompt": "Edema"}).model_prompt == "Edema"


def test_limits_from_conf_apply_to_requests():
    limits = GenerateLimits.from_conf({"max_steps": "5", "max_upload_mb": "0.5", "max_boxes": "1", "other": "x"})
    assert limits == GenerateLimits(max_upload_mb=0.5, max_steps=5, max_boxes=1)
    assert limits.max_upload_bytes == 2**19
    with pytest.raises(XRealInputError, match="steps: 6 is outside"):
        GenerateParams.from_request({"steps": 6}, limits)
    with pytest.raises(RequestTooLarge, match="2 boxes"):
        GenerateParams.from_request({"boxes": [[0, 0, 1, 1], [0, 0, 2, 2]]}, limits)
    for conf, reason in [({"max_steps": "1.5"}, "integer"), ({"max_upload_mb": "0"}, "positive"),
                         ({"max_image_size": "big"}, "integer")]:  # fmt: skip
        with pytest.raises(XRealInputError, match=reason):
            GenerateLimits.from_conf(conf)


def test_models_and_bundles_resolve_to_local_folders(tmp_path):
    assert resolve_models("all") == resolve_models("") == list(MODELS)
    assert resolve_models(" cxr_anatomy ") == ["cxr_anatomy"]
    with pytest.raises(XRealInputError, match=r"models: unknown \['sam2'\]"):
        resolve_models("cxr_anatomy,sam2")
    embedded = resolve_bundle("xreal_generate", {})
    assert embedded.name == "cxr_xreal" and (embedded / "configs" / "inference.json").is_file()
    with pytest.raises(XRealInputError, match=f"missing {tmp_path}/cxr_anatomy_segmentation/configs/inference.json"):
        resolve_bundle("cxr_anatomy", {"bundles": str(tmp_path)})
    assert resolve_bundle("cxr_anatomy", {"bundles": str(tmp_path), "bundle_cxr_anatomy": str(embedded.parent /
                          "cxr_anatomy_segmentation")}).name == "cxr_anatomy_segmentation"  # fmt: skip


def test_uploads_and_image_sizes_are_checked(tmp_path):
    with pytest.raises(XRealInputError, match="anatomy: no file"):
        check_upload(None, "anatomy", 10)
    upload = tmp_path / "a.png"
    upload.write_bytes(b"x" * 11)
    assert check_upload(upload, "anatomy", 11) == upload
    with pytest.raises(RequestTooLarge, match="anatomy: 0.0 MiB; this server takes files up to"):
        check_upload(upload, "anatomy", 10)
    check_image_size(torch.zeros(1, 8, 4), "anatomy", 8)
    with pytest.raises(RequestTooLarge, match=r"\(9, 4\) pixels"):
        check_image_size(torch.zeros(1, 9, 4), "anatomy", 8)


@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".png"])
def test_results_round_trip_with_the_input_geometry(extension):
    image = torch.rand(1, 12, 10)
    affine = np.diag([0.2, 0.3, 1.0])
    affine[:2, 2] = [-5.0, 7.0]
    path = Path(write_result(image, extension, affine=affine))
    try:
        assert path.name.endswith(extension) and path.name.startswith("monai_xreal_")
        loaded = LoadImage(image_only=True)(path)
        if extension == ".png":  # 8-bit, truncated by SaveImage
            loaded = loaded / 255
        assert loaded.shape == (12, 10) and torch.allclose(loaded, image[0], atol=1 / 255 + 1e-6)
        if extension != ".png":
            assert np.allclose(loaded.affine.numpy()[:2, [0, 1, 3]], affine[:2], atol=1e-6)
    finally:
        path.unlink()
    labels = torch.randint(0, 4, (1, 6, 6))
    path = Path(write_result(labels, ".nii.gz", labels=True))
    try:
        loaded = LoadImage(image_only=True, dtype=None)(path)
        assert loaded.dtype == torch.uint8 and torch.equal(loaded, labels[0].to(torch.uint8))
    finally:
        path.unlink()
    with pytest.raises(XRealInputError, match="result_extension"):
        write_result(image, ".jpg")


def test_dicom_results_carry_their_provenance():
    import pydicom

    from monai_xreal.io.dicom import read_dicom_provenance

    record = {"bundle": {"name": "tiny", "version": "0", "model_sha256": "0" * 64}, "prompt": "Edema"}
    image = torch.rand(1, 12, 10)
    path = Path(write_result(image, ".dcm", provenance=record))
    try:
        assert read_dicom_provenance(path) == record and pydicom.dcmread(path).ConversionType == "SYN"
        assert np.allclose(pydicom.dcmread(path).pixel_array.T / 65535, image[0].numpy(), atol=1 / 65535)
    finally:
        path.unlink()
    before = set(Path(tempfile.gettempdir()).glob("monai_xreal_*.dcm"))
    with pytest.raises(ValueError, match="provenance"):
        write_result(image, ".dcm")
    assert set(Path(tempfile.gettempdir()).glob("monai_xreal_*.dcm")) <= before  # a refused result leaves no file


def test_save_images_writes_each_affine_and_identity_by_default(tmp_path):
    affine = np.array([[0, 0.5, 0, 3], [0.5, 0, 0, 4], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    paths = save_images(torch.rand(2, 1, 5, 5), ["a", "b"], tmp_path, "nii.gz", affines=[affine, None])
    assert np.allclose(LoadImage(image_only=True)(paths[0]).affine.numpy(), affine)
    assert np.allclose(LoadImage(image_only=True)(paths[1]).affine.numpy(), np.eye(4))


def test_app_dir_is_copied_where_monai_label_can_write(tmp_path, monkeypatch):
    assert writable_app_dir() == APP_DIR  # a source checkout is writable
    copy = writable_app_dir(tmp_path / "app")
    assert (copy / "main.py").read_bytes() == (APP_DIR / "main.py").read_bytes()
    monkeypatch.setattr("os.access", lambda path, mode: False)  # as in a read-only site-packages
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert writable_app_dir() == tmp_path / "cache" / "monai_xreal" / "label_app"


@pytest.mark.skipif(importlib.util.find_spec("monailabel") is not None, reason="only without MONAI Label")
def test_serve_without_monai_label_says_how_to_install(tmp_path):
    done = subprocess.run([sys.executable, "-m", "monai_xreal", "serve", "--studies", str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "MONAI Label is not installed" in done.stderr and "Traceback" not in done.stderr
