# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Latent noise filtering: the weighted loss, the scoring rules, and a fine-tune on simulated radiographs with
corrupted pairs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.inferers import DiffusionInferer
from monai.utils import set_determinism

from monai_xreal import XRealPipeline
from monai_xreal.engines import LatentDiffusionPrepareBatch, LatentNoiseFilter, SampleWeightedLoss
from monai_xreal.networks import AdaptedContextUNet
from monai_xreal.transforms import BuildPrompt


class _Batch:
    prompt_key = "prompt"
    last_kwargs: dict = {}


def _filter(**kwargs) -> LatentNoiseFilter:
    args = {"warmup_epochs": 1, "patience": 2, "z_threshold": 3.0, "down_weight": 0.5, **kwargs}
    return LatentNoiseFilter(SampleWeightedLoss(), _Batch(), **args)


def test_sample_weighted_loss_is_the_mean_when_unweighted_and_the_weighted_mean_otherwise():
    pred, target = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    loss = SampleWeightedLoss()
    assert torch.allclose(loss(pred, target), torch.nn.functional.mse_loss(pred, target))
    per_sample = ((pred - target) ** 2).mean((1, 2, 3))
    assert torch.allclose(loss.last_sample_losses, per_sample)
    loss.sample_weights = torch.tensor([1.0, 0.5, 0.0, 1.0])
    expected = (per_sample * loss.sample_weights).sum() / 2.5
    assert torch.allclose(loss(pred, target), expected)
    pred.requires_grad_(True)
    loss.sample_weights = torch.zeros(4)
    value = loss(pred, target)
    value.backward()
    assert value.item() == 0 and torch.count_nonzero(pred.grad) == 0  # a fully dropped batch teaches nothing
    loss.sample_weights = torch.ones(3)
    with pytest.raises(ValueError, match="do not match"):
        loss(pred, target)


def _records(rng, ids, loss_shift=None, text_shift=None, draws=4):
    """An epoch's ``(loss records, text records)``: losses spanning two orders of magnitude over the timesteps and
    text log-ratios, with per-sample shifts."""
    losses, texts = [], []
    for sample_id in ids:
        for _ in range(draws):
            step = int(rng.integers(0, 1000))
            log_loss = -4.0 * step / 1000 + rng.normal(0, 0.1) + (loss_shift or {}).get(sample_id, 0.0)
            losses.append((sample_id, step, log_loss))
            step = int(rng.integers(100, 500))
            gain = -0.02 * step / 500 + rng.normal(0, 0.01) + (text_shift or {}).get(sample_id, 0.0)
            texts.append((sample_id, step, gain))
    return losses, texts


def test_timestep_normalisation_keeps_clean_samples_and_flags_then_drops_persistent_outliers(caplog):
    rng = np.random.default_rng(0)
    ids = [f"s{i:02d}" for i in range(40)]
    bad_image, bad_text = {"s03": 1.5, "s07": 1.5}, {"s11": 0.15, "s19": 0.15}
    noise_filter = _filter()
    with caplog.at_level(logging.INFO, logger="monai_xreal.noise_filter"):
        noise_filter.update(*_records(rng, ids), epoch=1)  # warm-up: scored, nothing changes
        assert all(s.weight == 1.0 and s.strikes == 0 for s in noise_filter.samples.values())
        # a timestep-blind score would flag the samples that happened to draw small timesteps; this one does not
        assert max(abs(s.score) for s in noise_filter.samples.values()) < 0.3
        noise_filter.update(*_records(rng, ids, bad_image, bad_text), epoch=2)
        assert noise_filter.down_weighted == sorted([*bad_image, *bad_text])
        assert {noise_filter.samples[i].weight for i in noise_filter.down_weighted} == {0.5}
        noise_filter.update(*_records(rng, ids, bad_image, bad_text), epoch=3)
    assert sorted(noise_filter.dropped) == sorted([*bad_image, *bad_text])
    assert all(noise_filter.samples[i].weight == 0 and noise_filter.samples[i].dropped_epoch == 3 for i in bad_image)
    assert all(s.weight == 1.0 for i, s in noise_filter.samples.items() if i not in noise_filter.dropped)
    dropped_lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped_lines) == 4 and all("anomalous 2 epoch(s)" in line for line in dropped_lines)
    assert any("s11" in line and "its loss with other prompts" in line for line in dropped_lines)
    # a dropped sample gets weight 0 in every later batch; the others keep theirs
    engine = type("E", (), {})()
    engine.state = type("S", (), {"batch": {"id": ["s03", "s04", "s11"], "prompt": ["a", "b", "c"]}})()
    noise_filter.set_weights(engine)
    assert noise_filter.loss.sample_weights.tolist() == [0.0, 1.0, 0.0]
    # the table survives a checkpoint round trip
    restored = _filter()
    restored.load_state_dict(json.loads(json.dumps(noise_filter.state_dict())))
    assert restored.samples == noise_filter.samples and restored.dropped == noise_filter.dropped


def test_a_sample_that_stops_being_anomalous_is_restored_and_drops_are_capped(caplog):
    rng = np.random.default_rng(1)
    ids = [f"s{i:02d}" for i in range(20)]
    noise_filter = _filter(patience=3, max_drop_fraction=0.1, smoothing=1.0)
    noise_filter.update(*_records(rng, ids), epoch=1)
    noise_filter.update(*_records(rng, ids, {"s01": 1.5}), epoch=2)
    assert noise_filter.samples["s01"].weight == 0.5
    with caplog.at_level(logging.INFO, logger="monai_xreal.noise_filter"):
        noise_filter.update(*_records(rng, ids), epoch=3)
    assert noise_filter.samples["s01"].weight == 1.0 and "restored s01" in caplog.text
    shifts = {i: 2.0 for i in ids[:5]}  # five persistent outliers, but at most 10% (two) may be dropped
    for epoch in range(4, 9):
        noise_filter.update(*_records(rng, ids, shifts), epoch=epoch)
    assert len(noise_filter.dropped) == 2 and set(noise_filter.dropped) <= set(shifts)


def test_filter_finds_corrupted_pairs_while_fine_tuning_on_simulated_radiographs(simulated_samples, tmp_path, capsys):
    """Fine-tune the shipped demo report adapter (over the frozen demo UNet, as it was trained) on the 25 held-out
    simulated radiographs of which 6 are corrupted: half get another radiograph's report (other findings), half an
    image that is not theirs (inverted and upside down)."""
    set_determinism(0)  # the torch and Python generators: noise, timesteps, shuffling and reference prompts
    rng = np.random.default_rng(0)
    samples = simulated_samples
    ids = [f"simulated_{i:05d}" for i in range(len(samples))]
    pipeline = XRealPipeline.from_bundle(device="cpu", overrides={"report_adapter": True})
    images = torch.stack([torch.as_tensor(sample.image).float() for sample in samples])
    report = BuildPrompt("report", ("findings", "impression"))
    prompts = [report.text(sample.report) for sample in samples]
    order = rng.permutation(len(samples))
    wrong_report, wrong_image = order[:3].tolist(), order[3:6].tolist()
    for i in wrong_report:
        j = next(j for j in rng.permutation(len(samples)) if samples[j].labels != samples[i].labels)
        prompts[i] = report.text(samples[j].report)
    for i in wrong_image:
        images[i] = 1 - images[i].flip(-2)
    with torch.no_grad():
        mu, sigma = pipeline.autoencoder.encode(images)
    data = [{"id": ids[i], "latent_mu": mu[i], "latent_sigma": sigma[i], "prompt": prompts[i]}
            for i in range(len(samples))]  # fmt: skip
    network = AdaptedContextUNet(pipeline.unet, pipeline.prompt_adapter.requires_grad_(True), freeze_unet=True)
    loss = SampleWeightedLoss()
    prepare_batch = LatentDiffusionPrepareBatch(1000, pipeline.text_encoder, pipeline.scale_factor)
    noise_filter = LatentNoiseFilter(loss, prepare_batch, warmup_epochs=2, patience=2, probe_draws=4,
                                     output_file=tmp_path / "noise_filter.json")  # fmt: skip
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=6, train_data_loader=DataLoader(Dataset(data), batch_size=8, shuffle=True),
        network=network, optimizer=torch.optim.AdamW(pipeline.prompt_adapter.parameters(), lr=1e-5), loss_function=loss,
        inferer=DiffusionInferer(pipeline.scheduler), prepare_batch=prepare_batch, train_handlers=[noise_filter],
    )  # fmt: skip
    trainer.run()

    flagged = set(noise_filter.dropped) | set(noise_filter.down_weighted)
    corrupted = {ids[i] for i in wrong_report + wrong_image}
    images_found = {ids[i] for i in wrong_image} & flagged
    reports_found = {ids[i] for i in wrong_report} & flagged
    precision = len(flagged & corrupted) / max(len(flagged), 1)
    recall = len(flagged & corrupted) / len(corrupted)
    with capsys.disabled():
        print(
            f"\nnoise filter on 25 simulated radiographs (6 corrupted): precision {precision:.2f}, recall {recall:.2f} "
            f"(wrong images {len(images_found)}/3, wrong reports {len(reports_found)}/3), flagged {len(flagged)}"
        )
    assert len(images_found) == 3  # every image that is not its report's is flagged
    assert recall >= 0.5 and precision >= 0.75  # most corrupted pairs, few clean ones
    table = json.loads((tmp_path / "noise_filter.json").read_text())
    assert table["epoch"] == 6 and sorted(table["dropped"]) == sorted(noise_filter.dropped)
    assert len(table["samples"]) == len(samples)
