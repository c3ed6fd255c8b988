# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Evaluation metrics (FID, MS-SSIM diversity, pathology placement, classifier score), the report and its CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.metrics import FIDMetric
from torch import nn

from monai_xreal.cli.main import main
from monai_xreal.errors import XRealInputError
from monai_xreal.evaluation import build_evaluation, read_real_datalist
from monai_xreal.metrics import (
    GenerationEvaluation,
    LabelClassifier,
    extract_features,
    frechet_distance,
    intra_condition_ms_ssim,
    labels_in_prompt,
    load_classifier,
    ms_ssim_weights,
    pathology_placement,
    prompted_label_auc,
    requested_label_score,
    sample_seed,
)
from monai_xreal.metrics.extractors import XRVDenseNet121, load_feature_extractor
from monai_xreal.metrics.fid import low_rank_frechet_distance
from monai_xreal.simulation import write_phantom_set


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


# -- FID ---------------------------------------------------------------------------------------------------------


def test_fid_known_properties_on_features():
    torch.manual_seed(0)
    real = torch.randn(400, 8)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)
    shifted = [frechet_distance(real, real + s) for s in (0.25, 0.5, 1.0)]
    # a pure mean shift c leaves the covariances equal: FID = |c|^2
    assert shifted == pytest.approx([0.25**2 * 8, 0.5**2 * 8, 1.0 * 8], rel=1e-6)
    other = torch.randn(300, 8) * 1.5 + 0.2
    assert frechet_distance(real, other) == pytest.approx(frechet_distance(other, real), rel=1e-9)
    assert frechet_distance(real, other) == pytest.approx(float(FIDMetric()(other.double(), real.double())), rel=1e-9)


def test_fid_below_feature_dimension_is_exact_and_symmetric():
    torch.manual_seed(1)
    real, other = torch.randn(12, 64), torch.randn(10, 64) * 2 + 0.5
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(real, real + 1.0) == pytest.approx(64.0, rel=1e-6)
    assert frechet_distance(real, other) == pytest.approx(frechet_distance(other, real), rel=1e-9)
    # the sample-space identity agrees with MONAI's square root where that one is well defined
    big_real, big_other = torch.randn(200, 6), torch.randn(150, 6) @ torch.randn(6, 6)
    assert low_rank_frechet_distance(big_real, big_other) == pytest.approx(
        float(FIDMetric()(big_other.double(), big_real.double())), rel=1e-8
    )
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(real, torch.randn(5, 3))


@pytest.mark.parametrize("name", ["xrv-densenet121-res224-all", "inception-pytorch-fid"])
def test_fid_with_randomly_initialised_extractors(name):
    torch.manual_seed(0)
    extractor = load_feature_extractor(name, None)
    images = torch.rand(6, 1, 48, 48) * 0.6
    features = extract_features(extractor, images, batch_size=4)
    assert features.shape == (6, extractor.feature_dim)
    # a batch iterable gives the same features as one tensor
    assert torch.allclose(extract_features(extractor, list(images.split(2))), features, atol=1e-5)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    # brighter images move further away (seeded: a random network need not be monotonic for every draw)
    shifted = [extract_features(extractor, images + shift) for shift in (0.02, 0.1, 0.4)]
    distances = [frechet_distance(features, other) for other in shifted]
    assert 0 < distances[0] < distances[1] < distances[2]
    assert distances[1] == pytest.approx(frechet_distance(shifted[1], features), rel=1e-6)
    # a known shift of the extractor's features adds exactly its squared length
    direction = torch.randn(extractor.feature_dim)
    moved = frechet_distance(features.double(), features.double() + direction.double())
    assert moved == pytest.approx(float(direction.double().square().sum()), rel=1e-6)


# -- diversity ---------------------------------------------------------------------------------------------------


def test_ms_ssim_weights_fit_the_image_size():
    assert len(ms_ssim_weights(256)) == 5 and len(ms_ssim_weights(128)) == 4 and len(ms_ssim_weights(32)) == 2
    assert sum(ms_ssim_weights(128)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="too small"):
        ms_ssim_weights(16)


def test_intra_condition_ms_ssim_orders_diversity():
    torch.manual_seed(0)
    base = torch.rand(1, 1, 64, 64)
    identical = base.repeat(4, 1, 1, 1)
    assert intra_condition_ms_ssim(identical) == pytest.approx(1.0, abs=1e-5)
    slightly = (identical + 0.05 * torch.randn_like(identical)).clamp(0, 1)
    unrelated = torch.rand(4, 1, 64, 64)
    assert 1.0 > intra_condition_ms_ssim(slightly) > intra_condition_ms_ssim(unrelated)
    with pytest.raises(ValueError, match="K >= 2"):
        intra_condition_ms_ssim(base)


# -- pathology ---------------------------------------------------------------------------------------------------


def test_pathology_placement_scores_where_the_change_is():
    counterfactual = torch.full((4, 1, 8, 8), 0.5)
    mask = torch.zeros(4, 1, 8, 8)
    mask[:, :, 2:4, 2:4] = 1
    mask[3] = 0  # no region: undefined
    generated = counterfactual.clone()
    generated[0, :, 2:4, 2:4] += 0.3  # all inside
    generated[1, :, 6:, 6:] += 0.3  # all outside
    generated[2] += 0.1  # spread evenly: the chance level
    inside, area = pathology_placement(generated, counterfactual, mask)
    assert inside[:3].tolist() == pytest.approx([1.0, 0.0, 4 / 64])
    assert area[:3].tolist() == pytest.approx([4 / 64] * 3)
    assert math.isnan(inside[3]) and math.isnan(area[3])
    # masks on another grid are resized to the images'
    inside_small, _ = pathology_placement(generated[:1], counterfactual[:1], mask[:1, :, ::2, ::2])
    assert 0.0 < float(inside_small[0]) <= 1.0


def test_labels_in_prompt_matches_names_and_aliases():
    labels = ["Effusion", "Cardiomegaly", "Pleural_Thickening", "Lung Opacity"]
    assert labels_in_prompt("Pleural Effusion", labels) == [0]
    assert labels_in_prompt("cardiomegaly, pleural thickening", labels) == [1, 2]
    assert labels_in_prompt("No Finding", labels) == []
    assert labels_in_prompt("Opacity", labels) == []  # whole names only
    assert labels_in_prompt("Effusion", ["Pleural Effusion"]) == [0]


class _MeanIntensity(nn.Module):
    """Two logits: mean brightness and its negative, so the scores are predictable."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3)) - 0.5
        return torch.stack([self.scale * m, -self.scale * m], dim=1)


def test_prompted_label_auc_by_hand():
    prompts = ["Pleural Effusion", "Pneumothorax", "No Finding", "Pleural Effusion, Pneumothorax"]
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.3], [0.4, 0.2], [0.3, 0.8]])
    auc = prompted_label_auc(probabilities, prompts, ["Effusion", "Pneumothorax"])
    # Effusion: positives 0.9, 0.3 against negatives 0.2, 0.4 -> 3 of 4 pairs ordered; Pneumothorax: 0.3, 0.8 vs
    # 0.1, 0.2 -> 4 of 4
    assert auc["per_label"] == {"Effusion": 0.75, "Pneumothorax": 1.0} and auc["mean_auc"] == 0.875
    assert prompted_label_auc(probabilities[:1], prompts[:1], ["Effusion", "Pneumothorax"])["mean_auc"] is None


def test_requested_label_score_uses_the_named_outputs():
    classifier = LabelClassifier(_MeanIntensity(), ["Effusion", "Pneumothorax"], spatial_size=16)
    images = torch.stack([torch.ones(1, 32, 32), torch.zeros(1, 32, 32), torch.ones(1, 32, 32)])
    scores = requested_label_score(classifier, images, ["Pleural Effusion", "Pneumothorax", "No Finding"])
    assert scores[0] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert scores[1] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert math.isnan(scores[2])


def test_load_classifier_from_a_bundle_and_from_xrv_weights(tmp_path):
    bundle = tmp_path / "classifier"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    network = {"_target_": "monai.networks.nets.DenseNet121", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
               "init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]}  # fmt: skip
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": network}))
    meta = {
        "network_data_format": {
            "inputs": {"image": {"spatial_shape": [32, 32]}},
            "outputs": {"pred": {"channel_def": {"0": "Cardiomegaly", "1": "Effusion"}}},
        }
    }
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(XRealInputError, match="model.pt"):
        load_classifier(bundle)
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    reference = DenseNet121(**{k: v for k, v in network.items() if k != "_target_"}).eval()
    torch.save(reference.state_dict(), bundle / "models" / "model.pt")
    classifier = load_classifier(bundle)
    images = torch.rand(2, 1, 64, 64)
    assert classifier.labels == ["Cardiomegaly", "Effusion"]
    expected = torch.sigmoid(reference(torch.nn.functional.interpolate(images, size=(32, 32), mode="area")))
    assert torch.allclose(classifier(images), expected, atol=1e-6)

    weights = tmp_path / "xrv.pt"
    torch.save(XRVDenseNet121().published_state_dict(), weights)
    xrv = load_classifier(weights)
    probabilities = xrv(images)
    assert probabilities.shape == (2, 18) and len(xrv.labels) == 18
    assert bool(((probabilities >= 0) & (probabilities <= 1)).all())
    with pytest.raises(XRealInputError, match="no such"):
        load_classifier(tmp_path / "missing.pt")


# -- the evaluation ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_phantoms")
    probabilities = {"Pleural Effusion": 0.5, "Pneumothorax": 0.5, "Cardiomegaly": 0.0, "Consolidation": 0.0,
                     "Nodule": 0.0}  # fmt: skip
    write_phantom_set(root, 12, size=64, seed=3, validation_fraction=0.5, probabilities=probabilities)
    return root


def test_phantom_set_carries_validation_conditions(phantom_set):
    from monai_xreal.data import load_conditions

    conditions = load_conditions(phantom_set / "conditions.json")
    validation = json.loads((phantom_set / "datalist.json").read_text())["validation"]
    assert [c["id"] for c in conditions] == [item["id"] for item in validation]
    for condition, item in zip(conditions, validation):
        has_finding = any(item["labels"][name] for name in ("Pleural Effusion", "Pneumothorax"))
        assert ("pathology" in condition) == has_finding
        assert condition["prompt"] != "" and condition["seed"] == int(item["id"].split("_")[1])
    assert len(read_real_datalist(phantom_set / "datalist.json")) == 6


def test_generation_evaluation_report(responsive_pipeline, phantom_set, tmp_path):
    from monai_xreal.data import load_conditions
    from monai_xreal.metrics import load_real_images, load_segmenter

    conditions = load_conditions(phantom_set / "conditions.json")
    real = load_real_images(read_real_datalist(phantom_set / "datalist.json"), responsive_pipeline.spatial_shape)
    assert real.shape == (6, 1, *responsive_pipeline.spatial_shape) and 0 <= real.min() and real.max() <= 1
    evaluation = GenerationEvaluation(
        responsive_pipeline, conditions, real, num_samples=10, samples_per_condition=2,
        extractors={"xrv": load_feature_extractor("xrv-densenet121-res224-all", None)},
        segmenter=load_segmenter(), classifier=LabelClassifier(_MeanIntensity(), ["Effusion", "Pneumothorax"]),
        batch_size=3, sampling={"num_inference_steps": 2}, progress=False,
    )  # fmt: skip
    result = evaluation.run()
    metrics = result.report["metrics"]
    assert len(result.samples) == 10
    assert [s.condition for s in result.samples] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len({s.seed for s in result.samples}) == 10
    assert metrics["fid"]["xrv"]["fid"] >= 0 and metrics["fid"]["xrv"]["num_generated"] == 10
    assert metrics["diversity"]["num_conditions"] == 5 and 0 < metrics["diversity"]["ms_ssim"] <= 1
    assert metrics["anatomy"]["num_samples"] == 10 and 0 <= metrics["anatomy"]["mean_dice"] <= 1
    with_finding = sum("pathology" in conditions[s.condition] for s in result.samples)
    assert 0 < with_finding < 10  # the phantom seed gives both kinds, so both batching paths run
    placement = metrics["pathology"]["placement"]
    assert metrics["pathology"]["num_samples"] == with_finding
    assert 0 <= placement["inside_fraction"] <= 1 and 0 < placement["mask_area_fraction"] < 1
    assert 0 <= metrics["pathology"]["classifier"]["requested_label_probability"] <= 1
    # mAUC over every image: the classifier's probabilities recomputed here, the AUC taken from them by hand
    prompts = [s.prompt for s in result.samples]
    probabilities = evaluation.classifier(torch.stack([s.image for s in result.samples]))
    auc = metrics["classifier_auc"]
    assert auc["num_images"] == 10 and auc == prompted_label_auc(probabilities, prompts, ["Effusion", "Pneumothorax"])
    assert auc["mean_auc"] is None or 0 <= auc["mean_auc"] <= 1
    # the samples are the pipeline's own, seed for seed, and a counterfactual is the same call with the empty prompt
    sample = next(s for s in result.samples if "pathology" in conditions[s.condition])
    condition = evaluation.conditions[sample.condition]
    masks = (condition["anatomy"][None], condition["pathology"][None])
    again = responsive_pipeline(*masks, sample.prompt, seed=sample.seed, num_inference_steps=2)
    assert torch.allclose(again[0], sample.image, atol=1e-5)
    empty = responsive_pipeline(*masks, "", seed=sample.seed, num_inference_steps=2)
    assert torch.allclose(empty[0], sample.counterfactual, atol=1e-5)
    assert not torch.allclose(sample.image, sample.counterfactual, atol=1e-4)

    with pytest.raises(XRealInputError, match="different paths"):
        result.save(tmp_path / "same.json", tmp_path / "same.json")
    assert not list(tmp_path.iterdir())  # nothing half-written
    report, figure = result.save(tmp_path / "report.json", tmp_path / "report.png")
    assert json.loads(report.read_text())["metrics"]["anatomy"]["num_samples"] == 10
    from PIL import Image

    assert Image.open(figure).size[0] > 5 * responsive_pipeline.spatial_shape[0] / 2


def test_measures_per_demographic_group(responsive_pipeline, phantom_set):
    from monai_xreal.data import load_conditions
    from monai_xreal.metrics import load_segmenter

    conditions = load_conditions(phantom_set / "conditions.json")[:4]
    groups = [{"sex": "female", "age": 30}, {"sex": "male", "age": 30}, {"sex": "female", "age": 70}, None]
    for condition, demographics in zip(conditions, groups):
        if demographics:
            condition["demographics"] = demographics
    evaluation = GenerationEvaluation(responsive_pipeline, conditions, num_samples=8, samples_per_condition=2,
                                      segmenter=load_segmenter(), sampling={"num_inference_steps": 1},
                                      progress=False)  # fmt: skip
    assert evaluation.conditions[0]["prompt"].startswith("30 year old female. ")  # the model is asked for them
    result = evaluation.run()
    by_group = result.report["metrics"]["by_group"]
    assert set(by_group) == {"sex", "age_group"}  # race and view: no condition has them
    assert {g: v["num_samples"] for g, v in by_group["sex"].items()} == {"female": 4, "male": 2, "unknown": 2}
    assert {g: v["num_samples"] for g, v in by_group["age_group"].items()} == {"18-39": 4, "60-79": 2, "unknown": 2}
    # a group's Dice is the overall summary over its samples: the groups' weighted means give the overall mean
    overall = result.report["metrics"]["anatomy"]["mean_dice"]
    weighted = sum(v["anatomy"]["mean_dice"] * v["num_samples"] for v in by_group["sex"].values()) / 8
    assert weighted == pytest.approx(overall, rel=1e-6)
    female = [s for s in result.samples if s.condition in (0, 2)]
    assert by_group["sex"]["female"]["anatomy"]["mean_dice"] == pytest.approx(
        float(torch.stack([s.scores["dice"].mean() for s in female]).mean()), rel=1e-6)  # fmt: skip


def test_placement_is_undefined_when_the_prompt_changes_nothing(tiny_pipeline, phantom_set):
    from monai_xreal.data import load_conditions

    # the tiny bundle's UNet has its zero-initialised layers untouched, so it ignores the prompt entirely
    conditions = [c for c in load_conditions(phantom_set / "conditions.json") if "pathology" in c]
    evaluation = GenerationEvaluation(
        tiny_pipeline, conditions[:1], num_samples=2, samples_per_condition=2, sampling={"num_inference_steps": 1},
        progress=False,
    )  # fmt: skip
    placement = evaluation.run().report["metrics"]["pathology"]["placement"]
    assert placement["inside_fraction"] is None and 0 < placement["mask_area_fraction"] < 1


def test_bad_conditions_fail_before_sampling(tiny_pipeline, tmp_path):
    from conftest import save_mask

    bad = save_mask(np.full((1, 32, 32), 9, np.uint8), tmp_path, "bad")
    with pytest.raises(XRealInputError, match=r"conditions\[c0\].*labels \[9\]"):
        GenerationEvaluation(tiny_pipeline, [{"id": "c0", "anatomy": str(bad), "prompt": ""}], progress=False)
    with pytest.raises(XRealInputError, match="two real images"):
        GenerationEvaluation(tiny_pipeline, [{"id": "c0", "prompt": "x"}], torch.rand(1, 1, 8, 8),
                             extractors={"x": nn.Identity()}, progress=False)  # fmt: skip


def test_sample_seeds_are_distinct_and_stable():
    seeds = {sample_seed(c, r) for c in range(50) for r in range(8)}
    assert len(seeds) == 400 and sample_seed(7, 3) == sample_seed(7, 3)


def test_evaluate_command(tiny_bundle, phantom_set, tmp_path, capsys):
    weights = tmp_path / "xrv.pt"
    torch.save(XRVDenseNet121().published_state_dict(), weights)
    out = tmp_path / "out" / "report.json"
    out.parent.mkdir()
    code = main([
        "evaluate", "--bundle", str(tiny_bundle), "--conditions", str(phantom_set / "conditions.json"),
        "--real", str(phantom_set / "datalist.json"), "--num-images", "4", "--samples-per-condition", "2",
        "--num-inference-steps", "1", "--fid", f"xrv-densenet121-res224-all={weights}", "--output", str(out),
    ])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["num_samples"] == 4 and report["settings"]["sampling"]["num_inference_steps"] == 1
    assert set(report["metrics"]) >= {"fid", "diversity", "anatomy", "independent_judges"}
    judges = report["metrics"]["independent_judges"]
    assert judges["real_lung_judge"]["num_samples"] == 4 and judges["heart_box_judge"]["num_samples"] == 4
    assert 0.0 <= judges["real_lung_judge"]["lung_dice"] <= 1.0
    assert out.with_suffix(".png").is_file()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fid", "vgg=/x.pt"], "NAME=WEIGHTS"),
        (["--fid", "inception-pytorch-fid=/no/such/pt_inception.pth"], "pt_inception-2015-12-05"),
        (["--num-images", "0"], "--num-images"),
        (["--conditions", "/no/such/conditions.json"], "no such file"),
        (["--device", "cuda:7"], "no such CUDA device"),
        (["--output", "/tmp"], "must be a .json path"),
    ],
)
def test_evaluate_command_bad_input_is_one_line(tiny_bundle, phantom_set, tmp_path, capsys, extra, message):
    argv = ["evaluate", "--bundle", str(tiny_bundle), "--conditions", str(phantom_set / "conditions.json"),
            "--real", str(phantom_set / "datalist.json"), "--output", str(tmp_path / "r.json"), *extra]  # fmt: skip
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "r.json").exists()


def test_evaluate_bundle_config(tiny_bundle, phantom_set, tmp_path):
    from monai.bundle import run

    run(
        run_id="run", init_id=None, bundle_root=str(tiny_bundle),
        config_file=[str(tiny_bundle / "configs" / name) for name in ("common.json", "inference.json", "evaluate.json")],
        meta_file=str(tiny_bundle / "configs" / "metadata.json"),
        dataset_dir=str(phantom_set), num_samples=2, samples_per_condition=2, output_dir=str(tmp_path),
        num_inference_steps=1,
    )  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["num_samples"] == 2 and "anatomy" in report["metrics"]
    # layered on inference.json: its sampling ids are the pipeline's defaults
    assert report["settings"]["sampling_defaults"]["num_inference_steps"] == 1
    assert report["metrics"]["independent_judges"]["real_lung_judge"]["num_samples"] == 2
    assert (tmp_path / "report.png").is_file()


def test_build_evaluation_needs_real_images_for_fid(phantom_set):
    with pytest.raises(XRealInputError, match="real"):
        build_evaluation(phantom_set / "conditions.json", fid={"inception-pytorch-fid": "x.pth"})
