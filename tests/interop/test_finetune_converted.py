# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The chain from a pretrained model to controlled X-rays: a Stable-Diffusion-format model written by diffusers,
converted, its UNet fine-tuned on radiographs through the converted bundle's own train configs, an anatomy controller
and a ControlNet trained over it, then ``generate`` with masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from compvis_checkpoints import write_tiny_stable_diffusion
from ignite.engine import Events
from monai.bundle import create_workflow

from monai_xreal import XRealPipeline
from monai_xreal.bundle import read_scale_factor
from monai_xreal.cli.main import main
from monai_xreal.io import load_mask
from monai_xreal.io.hashing import sha256_file
from monai_xreal.simulation import write_phantom_set

SIZE = 32  # the tiny model's images (8 x 8 latents)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A v-prediction SD-format model (as SD 2.x) converted into a bundle."""
    source = tmp_path_factory.mktemp("sd_v")
    write_tiny_stable_diffusion(source, prediction_type="v_prediction")
    bundle = tmp_path_factory.mktemp("bundles") / "sd_v_bundle"
    assert main(["convert", "--from", "diffusers", "--input", str(source), "--output-bundle", str(bundle)]) == 0
    return bundle


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantoms")
    write_phantom_set(folder, num=20, size=64, seed=11, validation_fraction=0.2)
    return folder


def _train(bundle: Path, configs: list[str], data: Path, out: Path, **overrides) -> dict:
    """Run the bundle's own train configs (over its ``common.json``) through MONAI's workflow; the losses per epoch."""
    workflow = create_workflow(
        config_file=[str(bundle / "configs" / name) for name in ("common.json", *configs)],
        meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="train", bundle_root=str(bundle),
        dataset_dir=str(data), output_dir=str(out), num_workers=0, **overrides,
    )  # fmt: skip
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    losses: dict[int, list[float]] = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        losses.setdefault(engine.state.epoch, []).append(float(loss))

    workflow.run()
    workflow.finalize()
    return {"parser": workflow.parser, "means": [float(np.mean(v)) for _, v in sorted(losses.items())]}


def test_convert_finetune_train_controllers_and_generate_with_masks(converted, radiographs, tmp_path):
    bundle = shutil.copytree(converted, tmp_path / "bundle")
    conversion_scale = read_scale_factor(bundle / "models" / "scale_factor.json")
    prompt = "Pleural Effusion"
    before = XRealPipeline.from_bundle(bundle, device="cpu")(prompt=prompt, num_inference_steps=4, seed=0)

    # 1. fine-tune the converted UNet (every parameter) on the radiographs: v-prediction, [-1, 1], its scale factor
    run = _train(bundle, ["train_diffusion.json", "finetune.json"], radiographs, tmp_path / "finetune", epochs=6,
                 batch_size=4, learning_rate=0.003, ema_momentum=0.5, preview_steps=1,
                 demographics_in_prompt=True)  # fmt: skip
    parser = run["parser"]
    # the phantoms carry (synthetic) demographics, which the training prompts now start with
    trained = parser.get_parsed_content("prepare_batch").embeddings
    assert any(p.startswith(tuple(f"{age} year old" for age in range(18, 91))) for p in trained.prompts())
    prepare = parser.get_parsed_content("prepare_batch")
    assert prepare.prediction_type == "v_prediction" and prepare.scale_factor == conversion_scale
    assert parser.get_parsed_content("train#deterministic_transforms#encode_latent").low == -1.0
    assert run["means"][-1] < run["means"][0], run["means"]  # the loss falls
    shutil.copy2(tmp_path / "finetune" / "model.pt", bundle / "models" / "model.pt")
    (bundle / "models" / "model.safetensors").unlink(missing_ok=True)
    after = XRealPipeline.from_bundle(bundle, device="cpu")(prompt=prompt, num_inference_steps=4, seed=0)
    assert (after - before).abs().mean() > 0.01  # its samples changed

    # 2. an anatomy controller over it (mask-to-image, [0, 1], independent of the backbone's latent space)
    _train(bundle, ["train_anatomy_controller.json"], radiographs, tmp_path / "controller", epochs=2, batch_size=4,
           adversarial_warmup_iterations=1000)  # fmt: skip
    shutil.copy2(tmp_path / "controller" / "model_anatomy_controller.pt", bundle / "models")

    # 3. a ControlNet copied from the fine-tuned UNet, its condition embedding derived for the converted autoencoder
    run = _train(bundle, ["train_controlnet.json"], radiographs, tmp_path / "controlnet", epochs=1, batch_size=4,
                 preview_steps=1)  # fmt: skip
    assert run["parser"].get_parsed_content("prepare_batch").prediction_type == "v_prediction"
    shutil.copy2(tmp_path / "controlnet" / "model_controlnet.pt", bundle / "models")

    # 4. a report adapter over the frozen fine-tuned UNet (Diff-CXR's report conditioning)
    run = _train(bundle, ["train_diffusion.json", "train_report_diffusion.json"], radiographs, tmp_path / "report",
                 epochs=1, batch_size=4, preview_steps=1, freeze_unet=True,
                 unet_weights=str(bundle / "models" / "model.pt"))  # fmt: skip
    assert run["parser"].get_parsed_content("prepare_batch").scale_factor == conversion_scale
    adapted = run["parser"].get_parsed_content("network")
    assert all(not p.requires_grad for p in adapted.unet.parameters())
    assert (tmp_path / "report" / "model_report_adapter.pt").is_file()
    shutil.copy2(tmp_path / "report" / "model_report_adapter.pt", bundle / "models")
    reports = XRealPipeline.from_bundle(bundle, device="cpu", overrides={"report_adapter": True})
    assert reports.prompt_adapter is not None
    assert reports(prompt="Right pleural effusion.", num_inference_steps=2, seed=0).shape == (1, 1, SIZE, SIZE)

    # 5. the controllers join the pipeline once their weights are in models/, and generate follows the masks
    pipeline = XRealPipeline.from_bundle(bundle, device="cpu")
    assert pipeline.anatomy_controller is not None and pipeline.controlnet is not None
    assert pipeline.image_range == (-1.0, 1.0)
    conditions = {item["id"]: item for item in json.loads((radiographs / "conditions.json").read_text())["conditions"]}
    item = next(c for c in conditions.values() if c.get("pathology"))
    out = tmp_path / "generated"
    argv = ["generate", "--bundle", str(bundle), "--anatomy", str(radiographs / item["anatomy"]),
            "--pathology", str(radiographs / item["pathology"]), "--prompt", prompt, "--num-images", "2",
            "--num-inference-steps", "4", "--output-dir", str(out), "--device", "cpu", "--sex", "F", "--age", "70",
            "--race", "Black", "--view", "PA"]  # fmt: skip
    assert main(argv) == 0
    images = sorted(p for p in out.iterdir() if p.suffix == ".png")
    assert len(images) == 2
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["prompt"] == "70 year old Black female, PA view. Pleural Effusion"
    weights = record["bundle"]["weights"]  # provenance names the fine-tuned UNet and the trained controllers
    assert weights["models/model.pt"] == sha256_file(tmp_path / "finetune" / "model.pt")
    assert {"models/model_anatomy_controller.pt", "models/model_controlnet.pt"} <= set(weights)
    anatomy = load_mask(radiographs / item["anatomy"], "anatomy")[None]
    pathology = load_mask(radiographs / item["pathology"], "pathology")[None]
    for control in ("xreal", "controlnet"):
        generated = pipeline(anatomy=anatomy, pathology=pathology, prompt=prompt, num_inference_steps=4, seed=0,
                             control=control)  # fmt: skip
        assert generated.shape == (1, 1, SIZE, SIZE) and torch.isfinite(generated).all()
