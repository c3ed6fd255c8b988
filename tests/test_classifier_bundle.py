# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The pathology classifier bundle: its training config through MONAI's bundle workflow, and the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import create_workflow
from monai.metrics import compute_roc_auc

from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_cxr
from monai_xreal.metrics import load_classifier
from monai_xreal.simulation import write_phantom_set
from monai_xreal.transforms import LabelsToVectord

ROOT = Path(__file__).resolve().parents[1] / "bundles" / "cxr_classifier"
CONFIGS = ROOT / "configs"
CLASSES = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation", "Atelectasis", "Nodule", "Mass"]
SHIPPED_MEAN_AUC_FLOOR = 0.8  # measured on simulated radiographs of an unseen seed, see docs/README.md


def configs(name: str) -> list[str]:
    """``common.json`` then ``name``, as ``monai.bundle run --config_file`` layers them."""
    return [str(CONFIGS / "common.json"), str(CONFIGS / name)]


TINY_DENSENET = {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]}


def test_labels_to_vector_follows_the_class_order():
    out = LabelsToVectord("labels", ["Nodule", "Cardiomegaly", "Edema"])({"labels": {"Cardiomegaly": 1, "Nodule": 0}})
    assert torch.equal(out["label"], torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(XRealInputError, match="Cardiomegaly: -1 is not 0 or 1"):
        LabelsToVectord("labels", ["Cardiomegaly"])({"labels": {"Cardiomegaly": -1}})


def test_macro_auc_leaves_out_labels_without_positives():
    from monai_xreal.metrics.classification import PresentLabelsROCAUCMetric

    metric = PresentLabelsROCAUCMetric()
    y_pred = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.8, 0.5], [0.6, 0.4, 0.5], [0.3, 0.7, 0.5]])
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # label 3: no positive
    metric(y_pred, y)
    # label 1: positives 0.9, 0.6 over negatives 0.1, 0.3 -> 1.0; label 2: 0.8, 0.4 over 0.2, 0.7 -> 0.75
    assert metric.aggregate() == pytest.approx(0.875)
    metric.reset()
    metric(y_pred[:, 2:], y[:, 2:])
    assert metric.aggregate() != metric.aggregate()  # NaN: nothing to score


def test_train_config_learns_and_keeps_the_best_validation_auc(tmp_path):
    data = tmp_path / "phantoms"
    write_phantom_set(data, num=40, size=64, seed=5, validation_fraction=0.5)  # every finding in validation
    out = tmp_path / "out"
    workflow = create_workflow(
        config_file=configs("train.json"), meta_file=str(CONFIGS / "metadata.json"), workflow_type="train",
        bundle_root=str(ROOT), dataset_dir=str(data), output_dir=str(out), epochs=2, batch_size=10,
        spatial_size=[32, 32], **{f"network_def#{k}": v for k, v in TINY_DENSENET.items()},
    )  # fmt: skip
    workflow.initialize()
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    workflow.run()
    workflow.finalize()
    assert 0.0 <= evaluator.state.best_metric <= 1.0  # macro ROC AUC over the five findings
    weights = torch.load(out / "model.pt", weights_only=True)
    assert weights["class_layers.out.weight"].shape[0] == len(CLASSES)  # model.pt: the network's own weights
    assert (out / "checkpoint_final.pt").is_file()


def test_shipped_weights_recognise_the_simulated_findings(simulated_samples):
    classifier = load_classifier("embedded")
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert classifier.labels == CLASSES == list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values())
    images = torch.stack([torch.as_tensor(s.image).float() for s in simulated_samples])
    truth = torch.tensor([[float(s.labels[c]) for c in CLASSES] for s in simulated_samples])
    probabilities = classifier(images)
    assert probabilities.shape == (len(images), len(CLASSES))
    assert bool(((probabilities >= 0) & (probabilities <= 1)).all())
    aucs = {c: float(compute_roc_auc(probabilities[:, j], truth[:, j])) for j, c in enumerate(CLASSES)
            if 0 < truth[:, j].sum() < len(images)}  # fmt: skip
    assert len(aucs) == len(CLASSES) and sum(aucs.values()) / len(aucs) > SHIPPED_MEAN_AUC_FLOOR, aucs


def test_inference_workflow_writes_each_images_probabilities(tmp_path):
    data = tmp_path / "phantoms"
    write_phantom_set(data, num=10, size=128, seed=8, validation_fraction=0.5)
    workflow = create_workflow(
        config_file=configs("inference.json"), meta_file=str(CONFIGS / "metadata.json"), workflow_type="infer",
        bundle_root=str(ROOT), dataset_dir=str(data), output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    rows = (tmp_path / "out" / "probabilities.csv").read_text().strip().splitlines()
    validation = json.loads((data / "datalist.json").read_text())["validation"]
    assert len(rows) == len(validation) == 5
    classifier = load_classifier("embedded")  # the evaluation's loader gives the same probabilities
    by_name = {Path(item["image"]).stem: item["image"] for item in validation}
    for row in rows:
        name, *values = row.split(",")
        stem = next(stem for stem in by_name if stem in Path(name).name)
        expected = classifier(load_cxr(data / by_name[stem])[None])[0]
        assert torch.allclose(torch.tensor([float(v) for v in values]), expected, atol=1e-4)
