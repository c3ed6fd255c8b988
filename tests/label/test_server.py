# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A real MONAI Label server with this project's app: started with ``monailabel start_server``, called over HTTP."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
import torch
from conftest import write_cxr_dicom
from monai.transforms import LoadImage
from PIL import Image
from requests_toolbelt.multipart.decoder import MultipartDecoder

from monai_xreal.cli.serve import DATASTORE_FILE_EXT
from monai_xreal.io import save_images
from monai_xreal.io.dicom import PRIVATE_CREATOR, PRIVATE_GROUP
from monai_xreal.label import APP_DIR
from monai_xreal.metrics.adherence import anatomy_dice
from monai_xreal.simulation import RadiographSimulator

SIZE = 192  # not the bundle's 128: results must come back on the sent grid
STEPS = 20
UPLOAD_MB = 1  # the test server's --conf max_upload_mb


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})  # fmt: skip


def wait_for_info(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{url}/info/", timeout=5)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop(process)
    pytest.fail(f"the server did not answer /info/ within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``monailabel start_server`` (the launcher script MONAI Label installs) with the app and offline options."""
    folder = tmp_path_factory.mktemp("monailabel")
    studies, log, port = folder / "studies", folder / "server.log", free_port()
    launcher = Path(sys.executable).parent / "monailabel"
    command = [str(launcher), "start_server", "--app", str(APP_DIR), "--studies", str(studies),
               "--conf", "models", "xreal_generate,xreal_edit,cxr_anatomy", "--conf", "zoo_source", "github",
               "--conf", "sam2", "false", "--conf", "max_upload_mb", str(UPLOAD_MB),
               "--host", "127.0.0.1", "--port", str(port), "--uvicorn_app", "monai_xreal.label.asgi:app"]  # fmt: skip
    # the datastore lists DICOM files as `monai-xreal serve` makes it do
    process = start(command, log, env={"MONAILABEL_PYEXE": sys.executable,
                                       "MONAI_LABEL_DATASTORE_FILE_EXT": DATASTORE_FILE_EXT})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    info = wait_for_info(url, process, log)
    with httpx.Client(base_url=url, timeout=300) as client:
        yield client, info, studies
    stop(process)


@pytest.fixture(scope="module")
def phantom():
    """A simulated radiograph with its anatomy and a finding region, at a size the bundles were not trained on, from
    a seed and lung outlines they never saw."""
    return RadiographSimulator(size=SIZE, seed=4242, lung_shapes="held-out")(0, findings=["Pleural Effusion"])


def png(array: np.ndarray, folder: Path, name: str, labels: bool = True) -> Path:
    return save_images(torch.as_tensor(array)[None], [name], folder, "png", labels=labels)[0]


def infer(client, model: str, params: dict | None = None, output: str = "all", query: str = "", **files):
    opened = {field: (path.name, path.read_bytes()) for field, path in files.items()}
    return client.post(f"/infer/{model}?output={output}{query}", data={"params": json.dumps(params or {})},
                       files=opened)  # fmt: skip


def result(response, folder: Path) -> tuple[torch.Tensor, dict]:
    """The image (read back with MONAI's LoadImage) and JSON of an ``output=all`` response."""
    assert response.status_code == 200, response.text
    parts = MultipartDecoder(response.content, response.headers["content-type"]).parts
    params, image = None, None
    for part in parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        if 'name="params"' in disposition:
            params = json.loads(part.text)
        else:
            name = disposition.split('filename="')[1].split('"')[0]
            path = folder / name
            path.write_bytes(part.content)
            image = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    return image, params


def test_info_lists_the_infer_tasks_with_the_bundle_labels(server):
    _, info, _ = server
    assert set(info["models"]) == {"xreal_generate", "xreal_edit", "cxr_anatomy"}
    labels = {"right lung": 1, "left lung": 2, "heart": 3, "upper mediastinum": 4}
    assert info["models"]["cxr_anatomy"]["type"] == "segmentation"
    assert info["models"]["cxr_anatomy"]["labels"] == labels
    assert info["models"]["xreal_generate"]["labels"] == labels
    assert info["models"]["xreal_generate"]["config"]["steps"] == 4  # the bundle's sampling default


def test_generated_cxr_follows_the_sent_anatomy_and_segments_back(server, phantom, tmp_path):
    client, _, _ = server
    anatomy = png(phantom.anatomy, tmp_path, "anatomy")
    params = {"seed": 7, "steps": STEPS, "guidance": 3.0}
    image, echo = result(infer(client, "xreal_generate", params, file=anatomy), tmp_path)
    assert image.shape == (1, SIZE, SIZE)  # on the sent grid, not the model's 128
    assert 0.0 <= float(image.min()) < float(image.max()) <= 1.0
    assert echo["seed"] == 7 and echo["steps"] == STEPS and echo["guidance"] == 3.0 and echo["prompt"] == ""
    assert echo["eta"] == 1.0 and echo["scheduler"] == "ddim"  # bundle defaults, reported as used
    assert echo["input_shape"] == [SIZE, SIZE] and echo["output_shape"] == [SIZE, SIZE]
    version = json.loads((Path(APP_DIR).parents[3] / "bundles" / "cxr_xreal" / "configs" / "metadata.json").read_text())
    assert echo["model_shape"] == [128, 128] and echo["bundle_version"] == version["version"]

    # the segmentation task reads the generated image back: the anatomy it finds is the one that was sent
    generated = png(image.numpy(), tmp_path, "generated", labels=False)
    label, seg = result(infer(client, "cxr_anatomy", file=generated), tmp_path)
    assert label.shape == (1, SIZE, SIZE) and set(torch.unique(label).tolist()) <= {0, 1, 2, 3, 4}
    dice = anatomy_dice(label[None], torch.as_tensor(phantom.anatomy)[None])[0]
    assert float(dice.mean()) > 0.8, dice
    assert seg["label_names"]["heart"] == 3


def test_same_seed_same_image_and_png_output_with_a_pathology_mask(server, phantom, tmp_path):
    client, _, _ = server
    files = {"file": png(phantom.anatomy, tmp_path, "anatomy"), "label": png(phantom.pathology, tmp_path, "effusion")}
    params = {"seed": 11, "steps": 8, "prompt": "Pleural Effusion", "result_extension": ".png"}
    first, echo = result(infer(client, "xreal_generate", params, **files), tmp_path)
    second, _ = result(infer(client, "xreal_generate", params, **files), tmp_path)
    assert echo["pathology"] == "mask" and echo["prompt"] == "Pleural Effusion"
    assert first.shape == (1, SIZE, SIZE) and torch.equal(first, second)
    assert first.dtype == torch.float32 and float(first.max()) > 1  # PNG: 8-bit values
    # DICOM: the same image, marked synthetic, its provenance inside and in the response
    as_dicom = infer(client, "xreal_generate", {**params, "result_extension": ".dcm"}, **files)
    assert as_dicom.status_code == 200, as_dicom.text
    parts = MultipartDecoder(as_dicom.content, as_dicom.headers["content-type"]).parts
    dicom_echo = json.loads(next(p.text for p in parts if b'name="params"' in p.headers[b"Content-Disposition"]))
    dicom_bytes = next(p.content for p in parts if b"filename=" in p.headers[b"Content-Disposition"])
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes))
    assert dataset.ConversionType == "SYN" and "SYNTHETIC" in dataset.DerivationDescription
    inside = json.loads(dataset.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x10].value)
    assert inside == dicom_echo["provenance"]
    assert dicom_echo["provenance"]["image_sha256"] == echo["provenance"]["image_sha256"]
    assert dicom_echo["provenance"]["sampling"]["seed"] == 11 and dicom_echo["provenance"]["synthetic"] is True
    pixels = torch.as_tensor(dataset.pixel_array.T.astype(np.float32) / 65535)
    assert pixels.shape == (SIZE, SIZE) and float((pixels - first[0] / 255).abs().max()) <= 1 / 255 + 1e-4
    boxes = {**params, "boxes": [[60, 100, 120, 160]], "result_extension": ".nii.gz"}
    with_boxes, echo = result(infer(client, "xreal_generate", boxes, file=files["file"]), tmp_path)
    assert echo["pathology"] == "boxes" and echo["boxes"] == [[60.0, 100.0, 120.0, 160.0]]
    assert with_boxes.shape == (1, SIZE, SIZE) and float(with_boxes.max()) <= 1.0


def test_output_on_the_model_grid_keeps_the_geometry_of_the_anatomy(server, phantom, tmp_path):
    client, _, _ = server
    anatomy = png(phantom.anatomy, tmp_path, "anatomy")
    image, echo = result(infer(client, "xreal_generate", {"steps": 4, "output_grid": "model"}, file=anatomy), tmp_path)
    assert image.shape == (1, 128, 128) and echo["output_shape"] == [128, 128]
    assert isinstance(echo["seed"], int)  # drawn by the server and echoed, so the image can be made again
    spacing = np.linalg.norm(np.asarray(image.affine)[:2, :2], axis=0)
    np.testing.assert_allclose(spacing, [SIZE / 128, SIZE / 128], rtol=1e-5)  # 128 pixels span the 192 sent


def test_dicom_cxr_segmented_then_edited_label_drives_generation(server, phantom, tmp_path):
    """The viewer loop: a DICOM in the datastore, auto-segmented, the label edited and saved, then generated from."""
    client, _, studies = server
    stored = np.round(phantom.image[0].T * 4095).astype(np.uint16)  # rows x columns, 12-bit
    dicom = write_cxr_dicom(tmp_path / "cxr.dcm", stored, "MONOCHROME2")
    put = client.put("/datastore/image?image=case1", files={"file": ("cxr.dcm", dicom.read_bytes())})
    assert put.status_code == 200, put.text
    label, _ = result(infer(client, "cxr_anatomy", query="&image=case1"), tmp_path)
    assert label.shape == (1, SIZE, SIZE)
    assert float(anatomy_dice(label[None], torch.as_tensor(phantom.anatomy)[None]).mean()) > 0.85

    edited = label.clone()
    edited[edited == 3] = 0  # the user erases the heart and draws a larger one
    x, y = np.mgrid[:SIZE, :SIZE]
    edited[0][torch.as_tensor((x - 100) ** 2 + (y - 120) ** 2 < 30**2)] = 3
    edited_png = png(edited.numpy(), tmp_path, "edited").read_bytes()
    saved = client.put("/datastore/label?image=case1&tag=final", files={"label": ("case1.png", edited_png)})
    assert saved.status_code == 200, saved.text
    image, echo = result(infer(client, "xreal_generate", {"steps": 4, "anatomy_label_tag": "final"},
                               query="&image=case1"), tmp_path)  # fmt: skip
    assert image.shape == (1, SIZE, SIZE) and echo["input_shape"] == [SIZE, SIZE]
    missing = infer(client, "xreal_generate", {"anatomy_label_tag": "nope"}, query="&image=case1")
    assert missing.status_code == 404 and "no label tagged 'nope'" in missing.json()["detail"]


def noise_png(folder: Path, side: int) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "noise.png")
    return folder / "noise.png"


def test_monai_label_python_client_generates_and_reports_bad_parameters(server, phantom, tmp_path):
    """MONAI Label's own client (what 3D Slicer's module uses), as docs/label.md shows it."""
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

    client, _, _ = server
    remote = MONAILabelClient(str(client.base_url), tmpdir=str(tmp_path))
    anatomy = png(phantom.anatomy, tmp_path, "anatomy")
    path, echo = remote.infer("xreal_generate", "", {"seed": 3, "steps": 4, "prompt": "Cardiomegaly"},
                              file=str(anatomy))  # fmt: skip
    image = LoadImage(image_only=True)(path)
    assert image.shape == (SIZE, SIZE) and echo["seed"] == 3 and echo["prompt"] == "Cardiomegaly"
    with pytest.raises(MONAILabelClientException, match="Status: 422.*steps: must be an integer"):
        remote.infer("xreal_generate", "", {"steps": "many"}, file=str(anatomy))


def test_bad_requests_are_4xx_with_one_line_reasons_and_the_server_keeps_serving(server, phantom, tmp_path):
    client, _, _ = server
    anatomy = png(phantom.anatomy, tmp_path, "anatomy")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(rgb)
    huge_side = png(np.zeros((1, 4100, 8), np.uint8), tmp_path, "long")
    cases = [
        (infer(client, "no_such_model", file=anatomy), 404, "unknown model 'no_such_model'"),
        (infer(client, "xreal_generate", {"steps": 5}), 400, "no input"),
        (infer(client, "xreal_generate", query="&image=missing"), 404, "not in the datastore"),
        (infer(client, "xreal_generate", {"steps": "ten"}, file=anatomy), 422, "steps: must be an integer"),
        (infer(client, "xreal_generate", {"guidance": [1]}, file=anatomy), 422, "guidance: must be a number"),
        (infer(client, "xreal_generate", {"steps": 100000}, file=anatomy), 422, "steps: 100000 is outside"),
        (infer(client, "xreal_generate", file=rgb), 422, "anatomy: expected a single-channel mask"),
        (infer(client, "xreal_generate", file=png(phantom.anatomy * 3, tmp_path, "big")), 422, "not in the bundle"),
        (infer(client, "xreal_generate", file=anatomy, label=png(phantom.pathology[:, :100], tmp_path, "cut")),
         422, "pathology: shape (100, 192) differs"),
        (infer(client, "xreal_generate", {"boxes": [[5, 5, 1, 1]]}, file=anatomy), 422, "boxes: box 0"),
        (infer(client, "xreal_generate", {"result_extension": ".jpg"}, file=anatomy), 422, "result_extension"),
        (infer(client, "xreal_generate", file=noise_png(tmp_path, 1200)), 413, "server takes files up to 1 MiB"),
        (infer(client, "xreal_generate", file=huge_side), 413, "sides up to 4096"),
        (infer(client, "cxr_anatomy", file=huge_side), 413, "sides up to 4096"),
        (infer(client, "cxr_anatomy", file=noise_png(tmp_path, 1800)), 413, "request body of"),
    ]  # fmt: skip
    malformed = client.post("/infer/xreal_generate", data={"params": "{steps"}, files={"file": ("a.png", b"")})
    cases.append((malformed, 400, "params: not valid JSON"))
    for response, status, reason in cases:
        assert response.status_code == status, (reason, response.status_code, response.text)
        detail = response.json()["detail"]
        assert reason in detail and "\n" not in detail, detail

    image, _ = result(infer(client, "xreal_generate", {"steps": 2, "seed": 1}, file=anatomy), tmp_path)
    assert image.shape == (1, SIZE, SIZE)
    assert client.get("/info/").status_code == 200


def test_monai_xreal_serve_starts_the_app(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "monai_xreal", "serve", "--studies", str(tmp_path / "studies"),
               "--port", str(port), "--models", "cxr_anatomy", "--conf", "max_upload_mb", "0.1",
               "--app-dir", str(tmp_path / "app")]  # fmt: skip
    process = start(command, log)
    try:
        info = wait_for_info(f"http://127.0.0.1:{port}", process, log)
        assert set(info["models"]) == {"cxr_anatomy"}
        # run from a copy of the app (as from a read-only installation): MONAI Label's folders are made there
        assert (tmp_path / "app" / "main.py").is_file() and (tmp_path / "app" / "logs").is_dir()
        # the wrapper's additions are on: a body over the limit is refused before it is read
        big = httpx.post(f"http://127.0.0.1:{port}/infer/cxr_anatomy", content=b"x" * (3 * 2**19),
                         headers={"content-type": "application/octet-stream"}, timeout=60)  # fmt: skip
        assert big.status_code == 413
    finally:
        stop(process)


def test_serve_refuses_bad_options_in_one_line(tmp_path):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "monai_xreal", "serve", *args], capture_output=True, text=True)

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        cases = [
            (["--studies", str(tmp_path), "--port", str(busy.getsockname()[1])], "port: cannot listen"),
            (["--studies", str(tmp_path), "--models", "segment_everything"], "models: unknown"),
            (["--studies", str(tmp_path), "--bundles", str(tmp_path / "none")], "missing"),
            (["--studies", str(tmp_path), "--port", "70000"], "port: 70000 is not a TCP port"),
        ]
        for args, reason in cases:
            done = serve(*args)
            assert done.returncode == 2 and reason in done.stderr, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    finally:
        busy.close()
    dry = serve("--studies", str(tmp_path), "--port", "8123", "--dry-run", "--", "--workers", "1")
    assert dry.returncode == 0
    assert "-m monailabel.main start_server --app" in dry.stdout and "--conf sam2 false" in dry.stdout
    assert "--uvicorn_app monai_xreal.label.asgi:app" in dry.stdout and dry.stdout.strip().endswith("--workers 1")
    assert f"--studies {tmp_path.resolve()} " in dry.stdout
    dicomweb = serve("--studies", "http://127.0.0.1:8042/dicom-web", "--dry-run")  # a DICOMweb store goes as given
    assert dicomweb.returncode == 0 and "--studies http://127.0.0.1:8042/dicom-web " in dicomweb.stdout


def test_a_sent_dicom_is_edited_inside_the_drawn_region_and_comes_back_as_dicom(server, tmp_path):
    from monai_xreal.io.packaged import packaged_file

    client, _, _ = server
    pixels = pydicom.dcmread(packaged_file("chest_cr")).pixel_array[::5, ::5] >> 3  # the real CR, 12-bit, 391 x 369
    source = write_cxr_dicom(tmp_path / "cr.dcm", pixels, "MONOCHROME1", window=(1875, 3750))
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(source)
    region = np.zeros((1, 369, 391), np.uint8)
    region[0, 60:160, 220:320] = 1  # x 60-160, y 220-320
    params = {"prompt": "Pleural Effusion", "seed": 2, "steps": 2}
    response = infer(client, "xreal_edit", params, file=source, label=png(region, tmp_path, "region"))
    assert response.status_code == 200, response.text
    parts = MultipartDecoder(response.content, response.headers["content-type"]).parts
    echo = json.loads(next(p for p in parts if b'name="params"' in p.headers[b"Content-Disposition"]).text)
    edited = pydicom.dcmread(io.BytesIO(next(p for p in parts if b"filename=" in p.headers[b"Content-Disposition"]
                                             and b'name="params"' not in p.headers[b"Content-Disposition"]).content))  # fmt: skip
    before = pydicom.dcmread(source)
    changed = before.pixel_array != edited.pixel_array
    rows, columns = np.nonzero(changed)
    assert echo["format"] == "dcm" and echo["steps"] == 2 and echo["changed_pixels"] == int(changed.sum()) > 0
    assert rows.min() >= 220 and rows.max() < 320 and columns.min() >= 60 and columns.max() < 160
    assert edited.StudyInstanceUID == before.StudyInstanceUID and edited.SOPInstanceUID != before.SOPInstanceUID
    boxes = infer(client, "xreal_edit", {**params, "boxes": [[60, 220, 160, 320]]}, file=source)
    assert boxes.status_code == 200, boxes.text
    for response, reason in (
        (infer(client, "xreal_edit", params, file=source), "send the edit region"),
        (infer(client, "xreal_edit", params, file=source, label=png(region[:, :100], tmp_path, "cut")), "differs"),
        (infer(client, "xreal_edit", {**params, "boxes": [[0, 0, 369, 391]]}, file=source), "covers the whole"),
    ):
        assert response.status_code == 422 and reason in response.json()["detail"], response.text
