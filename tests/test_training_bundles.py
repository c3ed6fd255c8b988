# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Every training config of the generator bundle, run through MONAI's bundle workflow on a handful of phantoms."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, create_workflow

from monai_xreal.bundle import load_weights, read_bundle_config, read_scale_factor
from monai_xreal.engines.checkpoints import latest_checkpoint
from monai_xreal.simulation import write_phantom_set

ROOT = Path(__file__).resolve().parents[1] / "bundles" / "cxr_xreal"
CONFIGS = ROOT / "configs"
META = str(CONFIGS / "metadata.json")
COMMON = "common.json"
TRAIN_CONFIGS = [
    "train_autoencoder.json",
    "train_anatomy_controller.json",
    "train_diffusion.json",
    "train_controlnet.json",
]
# every train config and every override merged after it
TRAIN_STACKS = {
    "autoencoder": ["train_autoencoder.json"],
    "anatomy_controller": ["train_anatomy_controller.json"],
    "diffusion": ["train_diffusion.json"],
    "diffusion_noise_filter": ["train_diffusion.json", "noise_filter.json"],
    "report": ["train_diffusion.json", "train_report_diffusion.json"],
    "report_noise_filter": ["train_diffusion.json", "train_report_diffusion.json", "noise_filter.json"],
    "controlnet": ["train_controlnet.json"],
    "finetune_lora": ["train_diffusion.json", "finetune.json"],
}
SIZE = 32  # phantoms are drawn at 64 and resized by the configs' own transforms

# tiny networks (16x16 latents) so that every stage trains in seconds; common.json defines them for every config
TINY_AUTOENCODER = {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 8}
TINY_UNET = {
    "channels": [16, 32],
    "attention_levels": [False, True],
    "num_head_channels": [0, 16],
    "norm_num_groups": 8,
}
TINY = {
    "autoencoder_def": TINY_AUTOENCODER,
    "anatomy_controller_def": TINY_AUTOENCODER,
    "diffusion_unet_def": TINY_UNET,
    "controlnet_def": {**TINY_UNET, "conditioning_embedding_num_channels": [8, 8]},
}


def config_files(config: str | list[str]) -> list[str]:
    """``common.json`` then the train config and its overrides, as ``monai.bundle run --config_file`` takes them."""
    configs = [config] if isinstance(config, str) else list(config)
    return [str(CONFIGS / c) for c in [COMMON, *configs]]


def _overrides(**extra) -> dict:
    pairs = {f"{net}#{key}": value for net, keys in TINY.items() for key, value in keys.items()}
    return {"spatial_size": [SIZE, SIZE], "batch_size": 4, "num_workers": 0, **pairs, **extra}


def run_training(config: str | list[str], data: Path, out: Path, epochs: int, **extra) -> dict:
    """Train through the bundle workflow (a config, or a config and its overriding files, over ``common.json``);
    returns the losses per epoch, the trainer and the first weights."""
    workflow = create_workflow(
        config_file=config_files(config), meta_file=META, workflow_type="train", bundle_root=str(ROOT),
        dataset_dir=str(data), output_dir=str(out), epochs=epochs, **_overrides(**extra),
    )  # fmt: skip
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    seen: dict = {"losses": {}, "trainer": trainer}

    def record_start(engine):
        seen["start_epoch"] = engine.state.epoch
        seen["start_state"] = {k: v.clone() for k, v in engine.network.state_dict().items()}

    def record_loss(engine):
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        seen["losses"].setdefault(engine.state.epoch, []).append(float(loss))

    trainer.add_event_handler(Events.STARTED, record_start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, record_loss)
    workflow.run()
    workflow.finalize()
    seen["parser"] = workflow.parser
    return seen


def epoch_means(seen: dict) -> list[float]:
    return [float(np.mean(v)) for _, v in sorted(seen["losses"].items())]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantoms")
    write_phantom_set(folder, num=20, size=64, seed=7, validation_fraction=0.2)
    return folder


@pytest.fixture(scope="module")
def trained_autoencoder(phantoms, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("autoencoder")
    run_training("train_autoencoder.json", phantoms, out, epochs=2, learning_rate=0.002)
    return out / "model_autoencoder.pt"


@pytest.fixture(scope="module")
def trained_unet(phantoms, trained_autoencoder, tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("diffusion")
    run_training(
        "train_diffusion.json", phantoms, out, epochs=2, autoencoder_weights=str(trained_autoencoder), preview_steps=2
    )
    return out / "model.pt", json.loads((out / "scale_factor.json").read_text())["scale_factor"]


SHARED_IDS = ("autoencoder_def", "anatomy_controller_def", "diffusion_unet_def", "controlnet_def", "report_adapter_def",
              "text_encoder", "noise_scheduler", "latent_channels", "max_label", "scale_factor_file")  # fmt: skip


def _config_names() -> list[str]:
    return sorted(p.name for p in CONFIGS.glob("*.json") if p.name != "metadata.json")


def test_networks_text_encoder_and_scheduler_are_declared_once_in_common():
    common = ConfigParser.load_config_file(CONFIGS / COMMON)
    assert all(key in common for key in SHARED_IDS)
    for name in _config_names():
        if name != COMMON:
            config = ConfigParser.load_config_file(CONFIGS / name)
            assert not [key for key in SHARED_IDS if key in config], name
    assert ConfigParser.load_config_file(CONFIGS / "inference.json")["report_adapter"] is False  # label-trained UNet


def _keys_and_references(node, keys: list, refs: list) -> None:
    if isinstance(node, dict):
        keys.extend(node)
        for value in node.values():
            _keys_and_references(value, keys, refs)
    elif isinstance(node, list):
        for value in node:
            _keys_and_references(value, keys, refs)
    elif isinstance(node, str):
        refs.extend(re.findall(r"@([\w#:]+)", node))


def test_configs_address_transforms_handlers_and_steps_by_name_never_by_list_index():
    for name in _config_names():
        keys, refs = [], []
        _keys_and_references(ConfigParser.load_config_file(CONFIGS / name), keys, refs)
        indexed = [k for k in keys + refs if any(part.isdigit() for part in re.split("#|::", k))]
        assert not indexed, (name, indexed)


@pytest.mark.parametrize("stack", TRAIN_STACKS)
def test_train_workflow_has_every_required_property(stack, phantoms, tmp_path):
    workflow = create_workflow(
        config_file=config_files(TRAIN_STACKS[stack]), meta_file=META, workflow_type="train", bundle_root=str(ROOT),
        dataset_dir=str(phantoms), output_dir=str(tmp_path),
    )  # fmt: skip
    assert not workflow.check_properties()


def test_shipped_scale_factor_is_read_from_the_bundle_by_inference_and_training():
    shipped = 0.9992797846770824  # what the demo UNet was trained with (0.7.0)
    assert read_scale_factor(ROOT / "models" / "scale_factor.json") == shipped
    assert read_bundle_config(ROOT).get_parsed_content("scale_factor") == shipped
    controlnet = read_bundle_config(ROOT, "configs/train_controlnet.json")
    assert controlnet.get_parsed_content("scale_factor") == shipped


def test_autoencoder_loss_falls_logs_checkpoints_and_resumes(phantoms, tmp_path):
    out = tmp_path / "out"
    first = run_training(
        "train_autoencoder.json", phantoms, out, epochs=3, learning_rate=0.002, adversarial_warmup_iterations=4
    )
    means = epoch_means(first)
    assert means[-1] < 0.9 * means[0], means
    trainer = first["trainer"]
    assert trainer.state.iteration == 3 * 4  # 16 training phantoms, batch 4
    assert float(trainer.state.output["discriminator_loss"]) > 0  # the adversarial term is on after the warm-up
    assert (out / "model_autoencoder.pt").is_file()
    assert sorted(p.name for p in (out / "validation").iterdir()) == [
        f"reconstruction_epoch000{e}.png" for e in (1, 2, 3)
    ]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    checkpoint = latest_checkpoint(out)
    saved = torch.load(checkpoint, weights_only=True)
    assert set(saved) == {"model", "discriminator", "optimizer", "d_optimizer", "trainer"}

    second = run_training(
        "train_autoencoder.json", phantoms, out, epochs=4, learning_rate=0.002, adversarial_warmup_iterations=4
    )
    assert second["start_epoch"] == 3 and sorted(second["losses"]) == [4]
    for key, value in saved["model"].items():
        torch.testing.assert_close(second["start_state"][key], value)


def test_anatomy_controller_learns_images_from_masks(phantoms, tmp_path):
    seen = run_training("train_anatomy_controller.json", phantoms, tmp_path, epochs=3, learning_rate=0.002)
    means = epoch_means(seen)
    assert means[-1] < 0.9 * means[0], means
    assert (tmp_path / "model_anatomy_controller.pt").is_file() and latest_checkpoint(tmp_path) is not None
    assert (tmp_path / "validation" / "mask_to_image_epoch0003.png").is_file()
    # the controller's input is the label map scaled by the largest label: what the pipeline feeds it
    batch = seen["parser"].get_parsed_content("validate#preview").batch
    inputs, targets = seen["parser"].get_parsed_content("validate#preview").prepare_batch(batch)
    torch.testing.assert_close(inputs, batch["anatomy"].float() / 4)
    torch.testing.assert_close(targets, batch["image"].float())


def test_diffusion_training_scale_factor_ema_and_condition_dropout(phantoms, trained_autoencoder, tmp_path):
    seen = run_training(
        "train_diffusion.json", phantoms, tmp_path, epochs=4, autoencoder_weights=str(trained_autoencoder),
        preview_steps=2, learning_rate=0.002, condition_dropout=0.5,
    )  # fmt: skip
    means = epoch_means(seen)
    assert means[-1] < means[0], means
    parser = seen["parser"]
    # the scale factor is 1/std of the training latents, recorded for the inference config
    dataset = parser.get_parsed_content("train#dataset")
    latents = torch.stack([dataset[i]["latent_mu"] + 0 * dataset[i]["latent_sigma"] for i in range(len(dataset))])
    sigmas = torch.stack([dataset[i]["latent_sigma"] for i in range(len(dataset))])
    expected = 1 / (latents.double().var(unbiased=False) + sigmas.double().pow(2).mean()).sqrt()
    recorded = json.loads((tmp_path / "scale_factor.json").read_text())["scale_factor"]
    assert recorded == pytest.approx(float(expected), rel=1e-6)
    # conditioning dropout: the empty prompt was trained alongside the label prompts
    cache = parser.get_parsed_content("prepare_batch").embeddings
    assert "" in cache and len(cache) > 1
    # the shipped weights are the EMA weights, which lag the raw ones
    ema = torch.load(tmp_path / "model.pt", weights_only=True)
    raw = parser.get_parsed_content("network").state_dict()
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[k], raw[k].cpu()) for k in ema)
    assert (tmp_path / "validation" / "samples_epoch0004.png").is_file()
    saved = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert set(saved) == {"model", "ema", "optimizer", "trainer"} and saved["trainer"]["iteration"] == 4 * 4


def test_report_diffusion_trains_the_unet_on_findings_and_impression(phantoms, trained_autoencoder, tmp_path):
    from monai_xreal.transforms import BuildPrompt

    seen = run_training(
        ["train_diffusion.json", "train_report_diffusion.json"], phantoms, tmp_path, epochs=2,
        autoencoder_weights=str(trained_autoencoder), preview_steps=2, condition_dropout=0.3,
    )  # fmt: skip
    items = json.loads((phantoms / "datalist.json").read_text())["training"]
    reports = {BuildPrompt("report", ("findings", "impression")).text(item["report"]) for item in items}
    trained = set(seen["parser"].get_parsed_content("prepare_batch").embeddings.prompts()) - {""}
    # every prompt the UNet saw is a phantom's FINDINGS + IMPRESSION (and the previews' reports), never a label name
    previews = set(seen["parser"].get_parsed_content("preview_prompts"))
    assert trained and trained <= reports | previews and len(trained & reports) >= 2
    assert all("." in prompt and len(prompt.split()) >= 3 for prompt in trained)
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "validation" / "samples_epoch0002.png").is_file()


def test_report_adapter_trains_with_the_unet_and_serves_inference(phantoms, trained_autoencoder, tmp_path):
    from monai_xreal.bundle import load_weights
    from monai_xreal.engines import LatentNoiseFilter, SampleWeightedLoss
    from monai_xreal.errors import XRealInputError
    from monai_xreal.networks import AdaptedContextUNet
    from monai_xreal.pipeline import XRealPipeline

    configs = ["train_diffusion.json", "train_report_diffusion.json", "noise_filter.json"]
    extra = {"autoencoder_weights": str(trained_autoencoder), "preview_steps": 2, "learning_rate": 0.002,
             "report_adapter_def#num_tokens": 4, "noise_filter#warmup_epochs": 1}  # fmt: skip
    seen = run_training(configs, phantoms, tmp_path, epochs=2, **extra)
    parser = seen["parser"]
    network = parser.get_parsed_content("network")
    assert isinstance(network, AdaptedContextUNet)
    # one optimiser trains both: the adapter's queries moved from their initial values, and so did the UNet
    start, end = seen["start_state"], network.state_dict()
    assert not torch.equal(start["adapter.queries"], end["adapter.queries"].cpu())
    assert any(not torch.equal(start[k], end[k].cpu()) for k in start if k.startswith("unet."))
    # separate weight files: the UNet's keys are those inference loads, the adapter's load into its definition
    unet = load_weights(parser.get_parsed_content("diffusion_unet_def"), tmp_path / "model.pt")
    adapter = load_weights(parser.get_parsed_content("report_adapter_def"), tmp_path / "model_report_adapter.pt")
    ema = parser.get_parsed_content("ema").ema_model
    assert all(torch.equal(v, ema.adapter.state_dict()[k].cpu()) for k, v in adapter.state_dict().items())
    assert all(torch.equal(v, ema.unet.state_dict()[k].cpu()) for k, v in unet.state_dict().items())
    # the noise filter ran on every training phantom with the weighted loss and is in the checkpoint
    assert isinstance(parser.get_parsed_content("loss"), SampleWeightedLoss)
    table = json.loads((tmp_path / "noise_filter.json").read_text())
    ids = {item["id"] for item in json.loads((phantoms / "datalist.json").read_text())["training"]}
    assert table["epoch"] == 2 and set(table["samples"]) == ids
    saved = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert saved["noise_filter"]["samples"].keys() == ids
    assert isinstance(parser.get_parsed_content("noise_filter"), LatentNoiseFilter)

    # a third epoch resumes the filter's table and the wrapped network from the checkpoint
    resumed = run_training(configs, phantoms, tmp_path, epochs=3, **extra)
    assert resumed["start_epoch"] == 2
    assert json.loads((tmp_path / "noise_filter.json").read_text())["epoch"] == 3
    filter_state = resumed["parser"].get_parsed_content("noise_filter").samples
    assert all(state.epochs_seen["score"] == 3 for state in filter_state.values())

    # inference: a bundle holding both files with report_adapter on conditions the UNet through the adapter
    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT, bundle, ignore=shutil.ignore_patterns("models"))
    (bundle / "models").mkdir()
    for name in ("model.pt", "model_report_adapter.pt", "scale_factor.json"):  # what the training wrote
        shutil.copy2(tmp_path / name, bundle / "models" / name)
    shutil.copy2(trained_autoencoder, bundle / "models" / "model_autoencoder.pt")
    common = json.loads((bundle / "configs" / "common.json").read_text())
    for key in ("autoencoder_def", "diffusion_unet_def"):
        common[key].update(TINY[key])
    common.update(anatomy_controller_def=None, controlnet_def=None)
    common["report_adapter_def"]["num_tokens"] = 4
    (bundle / "configs" / "common.json").write_text(json.dumps(common))
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config.update(report_adapter=True, spatial_shape=[SIZE, SIZE])
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    pipeline = XRealPipeline.from_bundle(bundle, device="cpu")
    # the scale factor the training measured reaches inference through models/scale_factor.json
    assert (
        pipeline.scale_factor
        == parser.get_parsed_content("scale_factor")
        == read_scale_factor(tmp_path / "scale_factor.json")
    )
    prompts = ["The heart is enlarged. Cardiomegaly.", ""]
    context = pipeline.encode_prompts(prompts)
    assert context.shape == (2, 4, 384)
    adapter_file = bundle / "models" / "model_report_adapter.pt"
    adapter = load_weights(parser.get_parsed_content("report_adapter_def"), adapter_file)
    assert torch.allclose(context, adapter.eval()(pipeline.text_encoder(prompts)), atol=1e-6)
    images = pipeline(prompt=prompts[:1], num_inference_steps=2, seed=0)
    assert images.shape == (1, 1, SIZE, SIZE) and 0 <= images.min() and images.max() <= 1
    # the adapter's weight file is required once the config asks for it, and named when missing
    (bundle / "models" / "model_report_adapter.pt").unlink()
    with pytest.raises(XRealInputError, match="model_report_adapter.pt for the prompt_adapter"):
        XRealPipeline.from_bundle(bundle, device="cpu")

    # an adapter trained alone over that trained UNet (how the demo adapter was made): the UNet does not move, and
    # the latents are scaled as the UNet was trained (inference.json's scale_factor, not one measured again)
    frozen_extra = {k: v for k, v in extra.items() if not k.startswith("noise_filter")}
    frozen = run_training(configs[:2], phantoms, tmp_path / "frozen", epochs=1, unet_weights=str(tmp_path / "model.pt"),
                          freeze_unet=True, **frozen_extra)  # fmt: skip
    network = frozen["parser"].get_parsed_content("network")
    trained = torch.load(tmp_path / "model.pt", weights_only=True)  # the resumed run's
    assert all(torch.equal(v, network.unet.state_dict()[k].cpu()) for k, v in trained.items())
    assert not torch.equal(frozen["start_state"]["adapter.queries"], network.adapter.queries.detach().cpu())
    assert not network.unet.training and not any(p.requires_grad for p in network.unet.parameters())
    expected_scale = read_bundle_config(ROOT).get_parsed_content("scale_factor")
    assert frozen["parser"].get_parsed_content("scale_factor") == expected_scale


@pytest.mark.parametrize("trainable", ["attention", "lora"])
def test_finetune_starts_from_the_bundles_unet_and_keeps_its_scale_factor(
    trainable, phantoms, trained_autoencoder, trained_unet, tmp_path
):
    unet_weights, scale_factor = trained_unet
    seen = run_training(
        ["train_diffusion.json", "finetune.json"], phantoms, tmp_path, epochs=2, preview_steps=1,
        autoencoder_weights=str(trained_autoencoder), unet_weights=str(unet_weights), learning_rate=0.002,
        scale_factor_file=str(unet_weights.parent / "scale_factor.json"), trainable=trainable, lora_rank=2, gradient_checkpointing=trainable == "lora",
        ema_momentum=0.5,
    )  # fmt: skip
    parser = seen["parser"]
    # the converted / shipped scale factor is read, never recomputed over the new data
    assert parser.get_parsed_content("prepare_batch").scale_factor == scale_factor
    assert not (tmp_path / "scale_factor.json").exists()
    pretrained = torch.load(unet_weights, weights_only=True)
    start = {k.replace(".base_layer", ""): v for k, v in seen["start_state"].items() if ".lora_" not in k}
    assert all(torch.equal(start[k], pretrained[k]) for k in pretrained)  # it started from the bundle's UNet
    final = torch.load(tmp_path / "model.pt", weights_only=True)
    load_weights(_tiny("diffusion_unet_def"), tmp_path / "model.pt")  # plain UNet keys: inference loads it as is
    # frozen weights only see the EMA's float rounding ((1 - m) * w + m * w), trained ones move
    changed = {k for k in pretrained if not torch.allclose(final[k], pretrained[k], rtol=1e-6, atol=1e-7)}
    assert changed and all(".attentions." in k or ".attention." in k for k in changed)
    if trainable == "lora":
        assert all(k.rsplit(".", 2)[-2] in ("to_q", "to_k", "to_v", "out_proj") for k in changed)
    assert (tmp_path / "validation" / "samples_epoch0002.png").is_file()


def test_controlnet_training_and_controlnet_mode(phantoms, trained_autoencoder, trained_unet, tmp_path):
    unet_weights, scale_factor = trained_unet
    seen = run_training(
        "train_controlnet.json", phantoms, tmp_path, epochs=3, autoencoder_weights=str(trained_autoencoder),
        unet_weights=str(unet_weights), scale_factor_file=str(unet_weights.parent / "scale_factor.json"),
        preview_steps=2, learning_rate=0.002,
    )  # fmt: skip
    assert seen["parser"].get_parsed_content("prepare_batch").scale_factor == scale_factor  # the UNet's own
    means = epoch_means(seen)
    assert means[-1] < means[0], means
    assert (tmp_path / "model_controlnet.pt").is_file() and latest_checkpoint(tmp_path) is not None
    assert (tmp_path / "validation" / "controlnet_samples_epoch0003.png").is_file()
    # the ControlNet started as a copy of the UNet and learned; the UNet took no gradient
    parser = seen["parser"]
    unet, controlnet = parser.get_parsed_content("unet"), parser.get_parsed_content("network")
    assert all(p.grad is None and not p.requires_grad for p in unet.parameters())
    shared = set(unet.state_dict()) & set(controlnet.state_dict())
    assert len(shared) > 10
    assert any(not torch.equal(unet.state_dict()[k], controlnet.state_dict()[k]) for k in shared)
    pipeline = parser.get_parsed_content("validate#pipeline")
    batch = parser.get_parsed_content("validate#batch")
    images = pipeline(
        anatomy=batch["anatomy"], pathology=batch["pathology"], prompt=list(batch["prompt"]), control="controlnet",
        num_inference_steps=3, seed=0,
    )  # fmt: skip
    assert images.shape == (len(batch["prompt"]), 1, SIZE, SIZE)
    assert images.min() >= 0 and images.max() <= 1


# -- data-parallel training: every train config and override under multi_gpu_train.json, two gloo processes ----------

# what each stack runs with under DDP (1 epoch of 2 iterations a rank); {out} is the folder of all runs, in order, so
# the diffusion UNet trains on the DDP autoencoder's weights and the ControlNet on that UNet and its scale factor
DDP_EXTRA = {
    "autoencoder": {"adversarial_warmup_iterations": 1},
    "anatomy_controller": {"adversarial_warmup_iterations": 1},
    "diffusion": {},
    "diffusion_noise_filter": {"noise_filter#warmup_epochs": 1},
    "report": {},
    "report_noise_filter": {"noise_filter#warmup_epochs": 1},
    "controlnet": {
        "unet_weights": "{out}/diffusion/model.pt",
        "scale_factor_file": "{out}/diffusion/scale_factor.json",
    },
    "finetune_lora": {
        "unet_weights": "{out}/diffusion/model.pt",
        "scale_factor_file": "{out}/diffusion/scale_factor.json",
        "trainable": "lora",
        "lora_rank": 2,
    },
}
DDP_WEIGHTS = {"autoencoder": "model_autoencoder.pt", "anatomy_controller": "model_anatomy_controller.pt",
               "controlnet": "model_controlnet.pt"}  # fmt: skip


def ddp_driver(spec_file: str) -> None:
    """One ``torchrun`` process: run every stack of ``spec_file`` through ``create_workflow`` in turn, sharing the
    process group (created by the first run's ``initialize``), and write what this rank saw to
    ``<output_dir>/rank<r>.json``."""
    import torch.distributed as dist

    from monai_xreal.engines import LatentNoiseFilter

    runs = json.loads(Path(spec_file).read_text())
    for index, run in enumerate(runs):
        workflow = create_workflow(
            config_file=config_files([*TRAIN_STACKS[run["stack"]], "multi_gpu_train.json"]), meta_file=META,
            workflow_type="train", bundle_root=str(ROOT), **run["overrides"],
        )  # fmt: skip
        trainer = workflow.parser.get_parsed_content("train#trainer")
        network = trainer.network
        module = getattr(network, "module", network)
        start = {k: v.detach().clone() for k, v in module.state_dict().items()}
        workflow.run()
        handlers = workflow.parser.get_parsed_content("train#trainer#train_handlers")
        noise_filter = next((h for h in handlers if isinstance(h, LatentNoiseFilter)), None)
        end = module.state_dict()
        seen = {
            "rank": dist.get_rank(),
            "network": type(network).__name__,
            "module": type(module).__name__,
            "handlers": [type(h).__name__ for h in handlers],
            "iteration": trainer.state.iteration,
            "epoch_length": trainer.state.epoch_length,
            "moved": sorted({k.split(".")[0] for k in start if not torch.equal(start[k], end[k])}),
            "moved_keys": sorted(k for k in start if not torch.equal(start[k], end[k])),
            "checksum": float(sum(v.double().sum() for v in end.values() if v.is_floating_point())),
            "noise_filter_samples": None if noise_filter is None else sorted(noise_filter.samples),
        }
        if "prepare_batch" in workflow.parser and run["stack"] not in ("autoencoder", "anatomy_controller"):
            seen["scale_factor"] = workflow.parser.get_parsed_content("prepare_batch").scale_factor
        Path(run["overrides"]["output_dir"], f"rank{dist.get_rank()}.json").write_text(json.dumps(seen))
        dist.barrier()
        if index == len(runs) - 1:
            workflow.finalize()  # multi_gpu_train.json's finalize leaves the process group


@pytest.fixture(scope="module")
def ddp_runs(phantoms, tmp_path_factory) -> Path:
    """Every stack of :data:`TRAIN_STACKS` over ``multi_gpu_train.json``, in one ``torchrun`` of two gloo
    processes (launching the processes once keeps the whole check under a minute or two on two cores)."""
    out = tmp_path_factory.mktemp("ddp")
    runs = []
    for stack in TRAIN_STACKS:
        extra = {k: v.format(out=out) if isinstance(v, str) else v for k, v in DDP_EXTRA[stack].items()}
        overrides = _overrides(autoencoder_weights=f"{out}/autoencoder/model_autoencoder.pt", preview_steps=1,
                               **{"report_adapter_def#num_tokens": 4}, **extra)  # fmt: skip
        overrides.update(dataset_dir=str(phantoms), output_dir=str(out / stack), epochs=1)
        runs.append({"stack": stack, "overrides": overrides})
    spec = out / "runs.json"
    spec.write_text(json.dumps(runs))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
               "--ddp-driver", str(spec)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.parametrize("stack", TRAIN_STACKS)
def test_two_process_data_parallel_training_with_gloo(stack, ddp_runs):
    out = ddp_runs / stack
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    # the network the stack defines (autoencoder, UNet, UNet + report adapter, ControlNet) is wrapped and trained
    module = {
        "report": "AdaptedContextUNet",
        "report_noise_filter": "AdaptedContextUNet",
        "controlnet": "ControlNet",
        "autoencoder": "AutoencoderKL",
        "anatomy_controller": "AutoencoderKL",
    }.get(stack, "DiffusionModelUNet")
    for seen in ranks:
        assert seen["network"] == "DistributedDataParallel" and seen["module"] == module
        # 16 training phantoms over 2 ranks of batch 4: 2 iterations an epoch on each rank
        assert seen["epoch_length"] == 2 and seen["iteration"] == 2
        assert seen["moved"]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9, abs=1e-9)  # in step
    # rank 0 attaches every handler; rank 1 only those that change the training or join collectives
    assert {"StatsHandler", "TensorBoardStatsHandler", "ImageGridSaver"} <= set(ranks[0]["handlers"])
    every_rank = {"AccumulatedEMAHandler", "LatentNoiseFilter"}  # the EMA: ignite's, once per optimiser step
    assert set(ranks[1]["handlers"]) == set(ranks[0]["handlers"]) & every_rank
    has_ema = "AccumulatedEMAHandler" in ranks[0]["handlers"]
    assert has_ema == (stack not in ("autoencoder", "anatomy_controller"))
    saved = torch.load(latest_checkpoint(out), weights_only=True)
    assert saved["trainer"]["epoch_length"] == 2 and saved["trainer"]["iteration"] == 2
    assert (out / DDP_WEIGHTS.get(stack, "model.pt")).is_file() and list((out / "validation").glob("*_epoch0001.png"))
    written = [p for p in (out / "tensorboard").glob("events.out.tfevents.*") if p.stat().st_size > 150]
    assert written and len({p.name.split(".")[-2] for p in written}) == 1  # rank 0's writers alone
    if "noise_filter" in stack:  # attached on both ranks, each holding the table of both ranks' samples
        table = json.loads((out / "noise_filter.json").read_text())
        assert table["epoch"] == 1 and len(table["samples"]) == 16
        assert ranks[0]["noise_filter_samples"] == ranks[1]["noise_filter_samples"] == sorted(table["samples"])
        assert sorted(saved["noise_filter"]["samples"]) == sorted(table["samples"])
    else:
        assert "noise_filter" not in saved and not (out / "noise_filter.json").exists()
    if stack.startswith("report"):  # the adapter trained with the UNet and was written beside it
        assert {"adapter", "unet"} <= set(ranks[0]["moved"])
        adapter = load_weights(_tiny("report_adapter_def", num_tokens=4), out / "model_report_adapter.pt")
        assert adapter.queries.shape[0] == 4
        load_weights(_tiny("diffusion_unet_def"), out / "model.pt")  # the UNet alone, as inference loads it
    else:
        assert not (out / "model_report_adapter.pt").exists()
    if stack == "finetune_lora":  # adapters only, merged into plain UNet weights
        assert ranks[0]["moved_keys"] and all(".lora_" in k for k in ranks[0]["moved_keys"])
        load_weights(_tiny("diffusion_unet_def"), out / "model.pt")
    if stack in ("diffusion", "controlnet", "finetune_lora"):  # measured by the DDP diffusion run, read back after
        measured = read_scale_factor(ddp_runs / "diffusion" / "scale_factor.json")
        assert ranks[0]["scale_factor"] == ranks[1]["scale_factor"] == measured


def _tiny(config_id: str, **extra):
    """A network of ``common.json`` at the tiny sizes the training tests use."""
    parser = read_bundle_config(ROOT, f"configs/{COMMON}")
    for key, value in {**TINY.get(config_id, {}), **extra}.items():
        parser[f"{config_id}#{key}"] = value
    return parser.get_parsed_content(config_id)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--ddp-driver":
    ddp_driver(sys.argv[2])
