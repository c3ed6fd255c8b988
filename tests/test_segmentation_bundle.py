# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The anatomy segmentation bundle: model-zoo conformance, training, resuming and inference with the shipped weights."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, create_workflow
from monai.bundle.scripts import ckpt_export, verify_net_in_out
from monai.transforms import LoadImage

from monai_xreal.engines.checkpoints import latest_checkpoint
from monai_xreal.simulation import write_phantom_set

ROOT = Path(__file__).resolve().parents[1] / "bundles" / "cxr_anatomy_segmentation"
CONFIGS = ROOT / "configs"
META = str(CONFIGS / "metadata.json")


def configs(name: str) -> list[str]:
    """``common.json`` then ``name``, as ``monai.bundle run --config_file`` layers them."""
    return [str(CONFIGS / "common.json"), str(CONFIGS / name)]


MANDATORY_METADATA = [
    "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
    "description", "authors", "copyright", "network_data_format", "intended_use", "data_source", "data_type",
    "image_classes", "label_classes", "pred_classes", "eval_metrics", "references", "name",
]  # fmt: skip
DICE_THRESHOLD = 0.90  # measured on simulated radiographs of an unseen seed; see docs/README.md


def test_bundle_files_and_metadata():
    for name in ("LICENSE", "configs/metadata.json", "configs/common.json", "configs/inference.json",
                 "configs/train.json", "configs/logging.conf", "docs/README.md", "models/model.pt",
                 "sample_data/datalist.json"):  # fmt: skip
        assert (ROOT / name).is_file(), name
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert [key for key in MANDATORY_METADATA if key not in meta] == []
    assert meta["version"] in meta["changelog"]
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [128, 128] and image["value_range"] == [0, 1]
    assert image["is_patch_data"] is False
    assert pred["num_channels"] == 5 and len(pred["channel_def"]) == 5
    # the shipped weights are a plain state dict, as model-zoo bundles ship them
    state = torch.load(ROOT / "models" / "model.pt", weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values())


def test_train_and_inference_share_the_network_declared_once_in_common():
    common = ConfigParser.load_config_file(CONFIGS / "common.json")
    assert {"network_def", "num_classes", "spatial_size", "device"} <= set(common)
    for name in ("train.json", "inference.json"):
        assert "network_def" not in ConfigParser.load_config_file(CONFIGS / name), name


@pytest.mark.parametrize("workflow_type, config", [("inference", "inference.json"), ("train", "train.json")])
def test_workflow_properties(workflow_type, config, tmp_path):
    write_phantom_set(tmp_path / "phantoms", num=4, size=64, seed=0, validation_fraction=0.5)
    workflow = create_workflow(
        config_file=configs(config), meta_file=META, workflow_type=workflow_type, bundle_root=str(ROOT),
        dataset_dir=str(tmp_path / "phantoms"), output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    assert not workflow.check_properties()


def test_verify_net_in_out_and_torchscript_export(tmp_path):
    config = configs("inference.json")
    verify_net_in_out(net_id="network_def", meta_file=META, config_file=config, device="cpu", bundle_root=str(ROOT))
    exported = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(ROOT / "models" / "model.pt"),
                meta_file=META, config_file=config, bundle_root=str(ROOT))  # fmt: skip
    scripted = torch.jit.load(str(exported))
    parser = ConfigParser()
    parser.read_config(config)
    parser.read_meta(META)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ROOT / "models" / "model.pt", weights_only=True))
    net.eval(), scripted.eval()
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=1e-4)


def _train(data_dir, out_dir, epochs):
    """Train through the bundle's config; the losses and weights seen by the run."""
    workflow = create_workflow(
        config_file=configs("train.json"), meta_file=META, workflow_type="train", bundle_root=str(ROOT),
        dataset_dir=str(data_dir), output_dir=str(out_dir), epochs=epochs, batch_size=2, spatial_size=[64, 64],
        learning_rate=0.01,
    )  # fmt: skip
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    seen = {"losses": [], "start_state": None}
    trainer.add_event_handler(
        Events.STARTED,
        lambda e: seen.update(
            start_state={k: v.clone() for k, v in e.network.state_dict().items()}, start_epoch=e.state.epoch
        ),
    )
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen["losses"].append((e.state.epoch, float(e.state.output[0]["loss"])))
    )
    workflow.run()
    workflow.finalize()
    seen["trainer"] = trainer
    return seen


def test_train_resume(tmp_path):
    data = tmp_path / "phantoms"
    write_phantom_set(data, num=8, size=64, seed=3, validation_fraction=0.25)
    out = tmp_path / "out"
    assert latest_checkpoint(out) is None
    first = _train(data, out, epochs=3)
    per_epoch = [np.mean([loss for epoch, loss in first["losses"] if epoch == e]) for e in (1, 2, 3)]
    assert per_epoch[-1] < per_epoch[0], per_epoch
    assert first["start_epoch"] == 0 and first["trainer"].state.epoch == 3
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and (out / "model.pt").is_file()
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["trainer"]["iteration"] == first["trainer"].state.iteration == 3 * 3  # 6 training images, batch 2

    second = _train(data, out, epochs=4)  # resumes from epoch 3 and runs one more epoch
    assert second["start_epoch"] == 3 and second["trainer"].state.epoch == 4
    assert {epoch for epoch, _ in second["losses"]} == {4}
    for key, value in saved["model"].items():
        torch.testing.assert_close(second["start_state"][key], value)


def _dice(pred, label, value):
    p, g = pred == value, label == value
    return 2.0 * np.logical_and(p, g).sum() / max(p.sum() + g.sum(), 1)


def test_inference_with_shipped_weights_follows_the_anatomy(tmp_path, simulated_samples):
    from monai_xreal.io import save_images

    shown = simulated_samples[:6]
    data = tmp_path / "images"
    names = [f"simulated_{i:05d}" for i in range(len(shown))]
    save_images(np.stack([s.image for s in shown]), names, data)
    # datalist: a MONAI datalist file, as in every bundle (its validation list by default)
    (data / "datalist.json").write_text(json.dumps({"validation": [{"image": f"{name}.png"} for name in names]}))
    out = tmp_path / "seg"
    workflow = create_workflow(
        config_file=configs("inference.json"), meta_file=META, workflow_type="inference",
        bundle_root=str(ROOT), dataset_dir=str(data), output_dir=str(out),
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == [f"{name}_seg.png" for name in names]
    load = LoadImage(image_only=True)
    dice = {value: [] for value in (1, 2, 3, 4)}
    for path, sample in zip(written, shown):
        pred = np.asarray(load(path))
        assert pred.shape == (128, 128) and set(np.unique(pred)) <= {0, 1, 2, 3, 4}
        for value, scores in dice.items():
            scores.append(_dice(pred, sample.anatomy[0], value))
    means = {value: float(np.mean(scores)) for value, scores in dice.items()}
    assert np.mean([means[1], means[2], means[3]]) >= DICE_THRESHOLD, means
