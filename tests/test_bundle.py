# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from monai_xreal import XRealPipeline
from monai_xreal.bundle import WEIGHT_STEMS, default_bundle_path, read_bundle_config

MANDATORY_METADATA = [
    "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
    "description", "authors", "copyright", "network_data_format",
]  # fmt: skip


def test_shipped_bundle_layout_and_metadata():
    root = default_bundle_path()
    for name in (
        "LICENSE",
        "configs/metadata.json",
        "configs/common.json",
        "configs/inference.json",
        "models/scale_factor.json",
        "configs/logging.conf",
        "docs/README.md",
    ):
        assert (root / name).is_file(), name
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert all(key in meta for key in MANDATORY_METADATA)
    for item in list(meta["network_data_format"]["inputs"].values()) + list(
        meta["network_data_format"]["outputs"].values()
    ):
        assert {
            "type",
            "format",
            "modality",
            "num_channels",
            "spatial_shape",
            "dtype",
            "value_range",
            "is_patch_data",
            "channel_def",
        } <= set(item)
    assert "simulated from one real labelled chest ct" in meta["description"].lower()  # they say what they know
    assert meta["version"] in meta["changelog"] and (root / "models" / "model.pt").is_file()


BUNDLES = ["cxr_xreal", "cxr_classifier", "cxr_anatomy_segmentation"]


@pytest.mark.parametrize("name", BUNDLES)
def test_every_bundles_inference_workflow_is_created_with_its_defaults(name):
    """MONAI's model-zoo check: ``common.json`` + ``inference.json`` with nothing overridden, no property missing."""
    from monai.bundle import create_workflow

    root = default_bundle_path(name)
    workflow = create_workflow(
        config_file=[str(root / "configs" / "common.json"), str(root / "configs" / "inference.json")],
        workflow_type="infer",
        bundle_root=str(root),
        meta_file=str(root / "configs" / "metadata.json"),
    )
    assert workflow.check_properties() == []  # nothing missing, and the dataset was built from the defaults
    assert len(workflow.dataset) > 0


@pytest.mark.parametrize("name", BUNDLES)
def test_datalist_is_a_json_datalist_file_in_every_config_of_every_bundle(name):
    root = default_bundle_path(name)
    configs = sorted(p for p in (root / "configs").glob("*.json") if p.name not in ("metadata.json", "common.json"))
    checked = 0
    for config in configs:
        if any("#" in key for key in ConfigParser.load_config_file(config)):
            continue  # an override (noise_filter.json, multi_gpu_train.json, ...): merged after a train config
        parser = read_bundle_config(root, f"configs/{config.name}")
        if "datalist" in parser:
            parser["dataset_dir"] = "/data"
            assert parser.get_parsed_content("datalist").endswith(".json"), config.name
            checked += 1
    assert checked >= 2


def test_a_bundle_without_common_json_still_reads(tmp_path):
    """Bundles written before the layering (one self-contained ``inference.json``) read as before."""
    import shutil

    root = tmp_path / "single_file"
    shutil.copytree(default_bundle_path(), root, ignore=shutil.ignore_patterns("*.pt", "*.safetensors"))
    merged = read_bundle_config(root).get()
    merged.pop("_meta_")
    (root / "configs" / "common.json").unlink()
    (root / "configs" / "inference.json").write_text(json.dumps(merged))
    parser = read_bundle_config(root)
    assert parser.get("diffusion_unet_def") == merged["diffusion_unet_def"]
    assert parser.get_parsed_content("scale_factor") == 0.9992797846770824


def test_shipped_bundle_config_ids_and_weights_follow_monai_conventions():
    root = default_bundle_path()
    parser = read_bundle_config(root)
    for config_id in (
        "autoencoder_def",
        "diffusion_unet_def",
        "network_def",
        "anatomy_controller_def",
        "controlnet_def",
        "text_encoder",
        "noise_scheduler",
    ):
        assert config_id in parser, config_id
    assert parser.get("network_def") == "@diffusion_unet_def"
    for component in ("unet", "autoencoder", "anatomy_controller", "controlnet"):
        stem = WEIGHT_STEMS[component]
        state = torch.load(root / "models" / f"{stem}.pt", weights_only=True)
        assert isinstance(state, dict) and all(torch.is_tensor(v) for v in state.values())
    unet = parser.get_parsed_content("network_def")
    unet.load_state_dict(torch.load(root / "models" / "model.pt", weights_only=True))
    fmt = parser.get("_meta_")["network_data_format"]
    x = torch.randn(1, fmt["inputs"]["image"]["num_channels"], *fmt["inputs"]["image"]["spatial_shape"])
    context = torch.randn(1, 77, parser.get_parsed_content("text_encoder").embed_dim)
    with torch.no_grad():
        pred = unet(x, torch.tensor([500]), context=context)
    assert pred.shape[1] == fmt["outputs"]["pred"]["num_channels"]
    assert list(pred.shape[2:]) == fmt["outputs"]["pred"]["spatial_shape"]


def test_shipped_bundle_generates_at_its_resolution():
    pipe = XRealPipeline.from_bundle(device="cpu")
    from monai.transforms import LoadImage

    root = default_bundle_path() / "sample_data"
    load = LoadImage(image_only=True, ensure_channel_first=True)
    images = pipe(anatomy=load(root / "anatomy.png"), pathology=load(root / "pathology.png"), prompt="Effusion",
                  num_inference_steps=2, seed=0)  # fmt: skip
    assert images.shape == (1, 1, 128, 128) and 0 <= images.min() and images.max() <= 1


def test_monai_bundle_run_writes_images_for_a_conditions_datalist(tiny_bundle, mask_files, tmp_path):
    datalist = tmp_path / "conditions.json"
    datalist.write_text(json.dumps({"conditions": [
        {"id": "with_finding", "anatomy": mask_files["anatomy"].name, "pathology": mask_files["pathology"].name, "prompt": "Edema",
         "demographics": {"sex": "F", "age": 60}},
        {"id": "anatomy_only", "anatomy": mask_files["anatomy"].name},
    ]}))  # fmt: skip
    out = tmp_path / "generated"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(tiny_bundle),
        "--config_file", f"['{tiny_bundle / 'configs' / 'common.json'}','{tiny_bundle / 'configs' / 'inference.json'}']",
        "--meta_file", str(tiny_bundle / "configs" / "metadata.json"),
        "--datalist", str(datalist), "--output_dir", str(out), "--num_inference_steps", "2",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["anatomy_only.json", "anatomy_only.png", "with_finding.json", "with_finding.png"]
    assert f"to {out.resolve()}" in result.stdout + result.stderr  # the run says where it writes
    for name in ("anatomy_only", "with_finding"):
        array = np.asarray(Image.open(out / f"{name}.png"))
        assert array.shape == (32, 32) and array.dtype == np.uint8
        record = json.loads((out / f"{name}.json").read_text())  # the generation service's provenance sidecar
        assert record["synthetic"] and record["condition_id"] == name and record["output"]["file"] == f"{name}.png"
        assert record["sampling"]["num_inference_steps"] == 2 and record["anatomy"]["file"].endswith("anatomy.png")
    with_finding = json.loads((out / "with_finding.json").read_text())
    assert with_finding["sampling"]["seed"] == 0
    # the condition's demographics are in the prompt the model was given, and in the record
    assert with_finding["prompt"] == "60 year old female. Edema"
    assert with_finding["demographics"] == {"sex": "female", "age": 60}

    # the images are the library's, seed 0 and 1 for the two entries
    from monai.transforms import LoadImage

    load = LoadImage(image_only=True, ensure_channel_first=True)
    pipe = XRealPipeline.from_bundle(tiny_bundle, device="cpu")
    expected = pipe(anatomy=load(mask_files["anatomy"]), num_inference_steps=2, seed=1)
    written = load(out / "anatomy_only.png").as_tensor()[None] / 255
    torch.testing.assert_close(written, expected, atol=1 / 255 + 1e-6, rtol=0)


@pytest.mark.parametrize("name", BUNDLES)
def test_config_parser_resolves_fully_qualified_targets(name):
    configs = [p for p in sorted((default_bundle_path(name) / "configs").glob("*.json")) if p.name != "metadata.json"]
    targets = []

    def collect(node):
        if isinstance(node, dict):
            if "_target_" in node:
                targets.append(node["_target_"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for config in configs:
        collect(ConfigParser.load_config_file(config))
    assert targets and all("." in target for target in targets), targets


def test_label_vector_conditioner_bundle_round_trip(tiny_bundle, tmp_path, anatomy):
    """The second conditioning option: a CheXpert-style label conditioner whose weights travel with the bundle."""
    import shutil

    from monai_xreal.bundle import initialise_bundle_weights
    from monai_xreal.text import LabelVectorConditioner

    root = tmp_path / "labels_bundle"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("*.pt", "*.safetensors"))
    config = json.loads((root / "configs" / "inference.json").read_text())
    config["text_encoder"] = {
        "_target_": "monai_xreal.text.LabelVectorConditioner",
        "class_names": ["Atelectasis", "Cardiomegaly", "Edema", "Pleural Effusion"],
        "embed_dim": 64,
    }
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    written = initialise_bundle_weights(root, seed=1)
    assert root / "models" / "model_text_encoder.pt" in written
    pipe = XRealPipeline.from_bundle(root, device="cpu")
    assert isinstance(pipe.text_encoder, LabelVectorConditioner)
    saved = torch.load(root / "models" / "model_text_encoder.pt", weights_only=True)
    torch.testing.assert_close(pipe.text_encoder.present, saved["present"])
    images = pipe(anatomy=anatomy, prompt="Cardiomegaly, Edema", num_inference_steps=2, seed=0)
    assert images.shape == (1, 1, 32, 32)
