# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Every training config of the generator bundle, run through MONAI's bundle workflow on a handful of phantoms."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, create_workflow

from monai_xreal.bundle import read_bundle_config
from monai_xreal.data.phantoms.dataset import write_phantom_set
from monai_xreal.engines.checkpoints import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1] / "bundles" / "cxr_xreal"
CONFIGS = ROOT / "configs"
META = str(CONFIGS / "metadata.json")
TRAIN_CONFIGS = [
    "train_autoencoder.json",
    "train_anatomy_controller.json",
    "train_diffusion.json",
    "train_controlnet.json",
]
SIZE = 32  # phantoms are drawn at 64 and resized by the configs' own transforms

# tiny networks (16x16 latents) so that every stage trains in seconds
TINY_AUTOENCODER = {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 8}
TINY_UNET = {
    "channels": [16, 32],
    "attention_levels": [False, True],
    "num_head_channels": [0, 16],
    "norm_num_groups": 8,
}
TINY = {
    "train_autoencoder.json": {"autoencoder_def": TINY_AUTOENCODER},
    "train_anatomy_controller.json": {"anatomy_controller_def": TINY_AUTOENCODER},
    "train_diffusion.json": {"autoencoder_def": TINY_AUTOENCODER, "diffusion_unet_def": TINY_UNET},
    "train_controlnet.json": {
        "autoencoder_def": TINY_AUTOENCODER,
        "diffusion_unet_def": TINY_UNET,
        "controlnet_def": {**TINY_UNET, "conditioning_embedding_num_channels": [8, 8]},
    },
}


def _overrides(config: str, **extra) -> dict:
    pairs = {f"{net}#{key}": value for net, keys in TINY[config].items() for key, value in keys.items()}
    return {"spatial_size": [SIZE, SIZE], "batch_size": 4, "num_workers": 0, **pairs, **extra}


def run_training(config: str | list[str], data: Path, out: Path, epochs: int, **extra) -> dict:
    """Train through the bundle workflow (a config, or a config and its overriding files); returns the losses per
    epoch, the trainer and the first weights."""
    configs = [config] if isinstance(config, str) else list(config)
    workflow = create_workflow(
        config_file=[str(CONFIGS / c) for c in configs], meta_file=META, workflow_type="train", bundle_root=str(ROOT),
        dataset_dir=str(data), output_dir=str(out), epochs=epochs, **_overrides(configs[0], **extra),
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


def test_train_configs_define_the_networks_of_the_inference_config():
    inference = ConfigParser.load_config_file(CONFIGS / "inference.json")
    for config in TRAIN_CONFIGS:
        train = ConfigParser.load_config_file(CONFIGS / config)
        shared = [key for key in ("autoencoder_def", "anatomy_controller_def", "diffusion_unet_def", "controlnet_def",
                                  "text_encoder", "noise_scheduler") if key in train]  # fmt: skip
        assert shared, config
        for key in shared:
            assert train[key] == inference[key], (config, key)
        for key in ("latent_channels", "max_label"):  # values the definitions refer to
            if key in train:
                assert _parsed(CONFIGS / config, key) == _parsed(CONFIGS / "inference.json", key), (config, key)


def test_report_config_defines_the_adapter_of_the_inference_config():
    inference = ConfigParser.load_config_file(CONFIGS / "inference.json")
    report = ConfigParser.load_config_file(CONFIGS / "train_report_diffusion.json")
    assert report["report_adapter_def"] == inference["report_adapter_def"]
    assert inference["report_adapter"] is False  # the shipped UNet was trained on label prompts, without it


def _parsed(config: Path, key: str):
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.read_meta(META)
    return parser.get_parsed_content(key)


@pytest.mark.parametrize("config", TRAIN_CONFIGS)
def test_train_workflow_has_every_required_property(config, phantoms, tmp_path):
    workflow = create_workflow(
        config_file=str(CONFIGS / config), meta_file=META, workflow_type="train", bundle_root=str(ROOT),
        dataset_dir=str(phantoms), output_dir=str(tmp_path),
    )  # fmt: skip
    assert not workflow.check_properties()


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
    for name in ("model.pt", "model_report_adapter.pt"):
        shutil.copy2(tmp_path / name, bundle / "models" / name)
    shutil.copy2(trained_autoencoder, bundle / "models" / "model_autoencoder.pt")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    for key in ("autoencoder_def", "diffusion_unet_def"):
        config[key].update(TINY["train_diffusion.json"][key])
    config.update(report_adapter=True, anatomy_controller_def=None, controlnet_def=None, spatial_shape=[SIZE, SIZE])
    config["report_adapter_def"]["num_tokens"] = 4
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    pipeline = XRealPipeline.from_bundle(bundle, device="cpu")
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


def test_controlnet_training_and_controlnet_mode(phantoms, trained_autoencoder, trained_unet, tmp_path):
    unet_weights, scale_factor = trained_unet
    seen = run_training(
        "train_controlnet.json", phantoms, tmp_path, epochs=3, autoencoder_weights=str(trained_autoencoder),
        unet_weights=str(unet_weights), scale_factor=scale_factor, preview_steps=2, learning_rate=0.002,
    )  # fmt: skip
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


@pytest.mark.parametrize(
    "config, weights, grid",
    [("train_diffusion.json", "model.pt", "samples"), ("train_autoencoder.json", "model_autoencoder.pt", "reconstruction")],
)
def test_two_process_data_parallel_training_with_gloo(config, weights, grid, phantoms, trained_autoencoder, tmp_path):
    out = tmp_path / "ddp"
    extra = {"autoencoder_weights": str(trained_autoencoder), "preview_steps": 1}
    if config == "train_autoencoder.json":  # both the autoencoder and its discriminator are DDP-wrapped
        extra = {"adversarial_warmup_iterations": 1}
    pairs = _overrides(config, **extra)
    args = [f"--{key}={value if isinstance(value, str) else repr(value)}" for key, value in pairs.items()]
    configs = f"['{CONFIGS / config}','{CONFIGS / 'multi_gpu_train.json'}']"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
        "run", "--config_file", configs, "--meta_file", META, "--logging_file", str(CONFIGS / "logging.conf"),
        "--bundle_root", str(ROOT), "--dataset_dir", str(phantoms), "--output_dir", str(out), "--epochs", "2", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = torch.load(latest_checkpoint(out), weights_only=True)
    # 16 training phantoms over 2 ranks of batch 4: 2 iterations an epoch on each rank
    assert saved["trainer"]["epoch_length"] == 2 and saved["trainer"]["iteration"] == 4
    assert (out / weights).is_file() and (out / "validation" / f"{grid}_epoch0002.png").is_file()
    # rank 0 alone logs (the other rank's writers are created by the config but never written to)
    written = [p for p in (out / "tensorboard").glob("events.out.tfevents.*") if p.stat().st_size > 150]
    assert len(written) == 2 and len({p.name.split(".")[-2] for p in written}) == 1
