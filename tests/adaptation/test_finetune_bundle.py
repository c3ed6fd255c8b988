# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``finetune_bundle``: a generator bundle's UNet fine-tuned on a datalist, written out as a new bundle, resumable."""

from __future__ import annotations

import json

import pytest
import torch

from monai_xreal import XRealPipeline
from monai_xreal.adaptation import finetune_bundle
from monai_xreal.engines.checkpoints import latest_checkpoint
from monai_xreal.io.hashing import sha256_file
from monai_xreal.simulation import write_phantom_set

TINY = {"batch_size": 4, "num_workers": 0, "preview_steps": 1, "learning_rate": 0.002, "device": "cpu"}


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms")
    return write_phantom_set(folder, num=12, size=64, seed=5, validation_fraction=0.25)


def test_finetuned_bundle_has_new_unet_weights_and_the_rest_unchanged(tiny_bundle, radiographs, tmp_path):
    out = finetune_bundle(tiny_bundle, radiographs, tmp_path / "mine", trainable="all",
                          overrides={**TINY, "epochs": 2})  # fmt: skip
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    record = meta["fine_tuning"]
    assert record["num_training"] == 9 and record["trainable"] == "all"
    assert record["datalist_sha256"] == sha256_file(radiographs)
    assert record["weights_sha256"] == sha256_file(out / "models" / "model.pt")
    assert sha256_file(out / "models" / "model.pt") != sha256_file(tiny_bundle / "models" / "model.pt")
    for name in ("model_autoencoder.pt", "model_anatomy_controller.pt", "scale_factor.json"):
        assert sha256_file(out / "models" / name) == sha256_file(tiny_bundle / "models" / name)
    assert not list(out.rglob("output")) and not list(out.rglob(".*"))
    # the new bundle generates, and differently from the source with the same seed
    before = XRealPipeline.from_bundle(tiny_bundle, device="cpu")(prompt="Cardiomegaly", num_inference_steps=2, seed=0)
    after = XRealPipeline.from_bundle(out, device="cpu")(prompt="Cardiomegaly", num_inference_steps=2, seed=0)
    assert not torch.equal(before, after)
    # checkpoints stay in the work folder beside it; a longer run resumes from them
    work = tmp_path / "mine.work"
    first = torch.load(latest_checkpoint(work), weights_only=True)["trainer"]
    assert first["iteration"] == 2 * first["epoch_length"]
    # the latents were encoded once, into the work folder's disk cache (one file per training image)
    cached = {p: p.stat().st_mtime_ns for p in (work / "latents").glob("*.pt")}
    assert len(cached) == 9
    # a rerun of the finished request resumes and trains nothing (at a learning rate that would change everything)
    again = finetune_bundle(tiny_bundle, radiographs, tmp_path / "again", work_dir=work, trainable="all",
                            overrides={**TINY, "epochs": 2, "learning_rate": 0.5})  # fmt: skip
    assert sha256_file(again / "models" / "model.pt") == sha256_file(out / "models" / "model.pt")
    assert {p: p.stat().st_mtime_ns for p in (work / "latents").glob("*.pt")} == cached  # read, not encoded again
    finetune_bundle(tiny_bundle, radiographs, tmp_path / "mine3", work_dir=work, trainable="all",
                    overrides={**TINY, "epochs": 3})  # fmt: skip
    resumed = torch.load(latest_checkpoint(work), weights_only=True)["trainer"]
    assert resumed["iteration"] == 3 * first["epoch_length"] and latest_checkpoint(work).endswith("epoch=3.pt")


def test_the_text_encoder_trains_with_the_unet_and_goes_into_the_new_bundle(tiny_bundle, radiographs, tmp_path):
    from monai_xreal.text import HFTextEncoder

    out = finetune_bundle(tiny_bundle, radiographs, tmp_path / "mine", overrides={**TINY, "epochs": 1,
                          "train_text_encoder": True, "ema_momentum": 0.9, "learning_rate": 0.01})  # fmt: skip
    record = json.loads((out / "configs" / "metadata.json").read_text())["fine_tuning"]
    assert (
        record["text_encoder"] == "models/text_encoder" and (out / "models" / "text_encoder" / "config.json").is_file()
    )
    common = json.loads((out / "configs" / "common.json").read_text())
    assert common["text_encoder"]["path"] == "$@bundle_root + '/models/text_encoder'"
    source = XRealPipeline.from_bundle(tiny_bundle, device="cpu").text_encoder
    tuned = XRealPipeline.from_bundle(out, device="cpu").text_encoder
    assert isinstance(tuned, HFTextEncoder) and tuned.source == out / "models" / "text_encoder"
    prompts = ["Cardiomegaly", "No Finding"]
    assert not torch.allclose(tuned(prompts), source(prompts), atol=1e-4)  # its weights moved
    assert tuned.tokenizer(prompts)["input_ids"] == source.tokenizer(prompts)["input_ids"]  # the same tokenizer
    # the UNet weights are plain (no "unet." prefix, no encoder keys): the source's UNet loads them
    unet = torch.load(out / "models" / "model.pt", weights_only=True)
    assert unet.keys() == torch.load(tiny_bundle / "models" / "model.pt", weights_only=True).keys()
    assert record["kept_from_the_source_unet"] == ["model_controlnet.pt"]  # trained over the source UNet


def test_a_work_folder_resumes_only_its_own_request(tiny_bundle, radiographs, tmp_path):
    from monai_xreal.errors import XRealInputError

    finetune_bundle(
        tiny_bundle, radiographs, tmp_path / "a", work_dir=tmp_path / "work", overrides={**TINY, "epochs": 1}
    )
    with pytest.raises(XRealInputError, match="holds a run of another request \\(trainable differ"):
        finetune_bundle(tiny_bundle, radiographs, tmp_path / "b", work_dir=tmp_path / "work", trainable="attention",
                        overrides={**TINY, "epochs": 1})  # fmt: skip
    assert not (tmp_path / "b").exists()
    with pytest.raises(XRealInputError, match="'datalist'.* not overrides"):
        finetune_bundle(tiny_bundle, radiographs, tmp_path / "c", overrides={"datalist": "x.json"})
