# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The pieces the training configs are made of: losses, batches, ControlNet control, rank filtering, net checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.handlers import EMAHandler
from monai.bundle.scripts import verify_net_in_out
from monai.handlers import CheckpointLoader, CheckpointSaver, LrScheduleHandler, StatsHandler
from monai.networks.nets import ControlNet, DiffusionModelUNet

from monai_xreal.control import ControlledUNet, controlnet_condition
from monai_xreal.engines import (
    AutoencoderPrepareBatch,
    LatentDiffusionPrepareBatch,
    controlnet_from_unet,
    handlers_for_rank,
    kl_divergence,
    latent_scale_factor,
)
from monai_xreal.errors import XRealInputError
from monai_xreal.losses import LocalPerceptualLoss

ROOT = Path(__file__).resolve().parents[2] / "bundles" / "cxr_xreal"
UNET = dict(
    spatial_dims=2, in_channels=3, channels=(16, 32), attention_levels=(False, True), num_res_blocks=1,
    num_head_channels=(0, 16), norm_num_groups=8, with_conditioning=True, cross_attention_dim=8,
)  # fmt: skip


def test_kl_divergence_is_zero_for_the_prior_and_matches_the_closed_form():
    assert kl_divergence(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)).item() == pytest.approx(0.0, abs=1e-7)
    mu, sigma = torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), 2.0)
    per_value = 0.5 * (0.25 + 4.0 - torch.log(torch.tensor(4.0)) - 1)
    assert kl_divergence(mu, sigma).item() == pytest.approx(4 * per_value.item())


def test_autoencoder_batch_mixes_masks_and_images_per_sample():
    images = torch.rand(64, 1, 4, 4)
    anatomy = torch.randint(0, 5, (64, 1, 4, 4))
    batch = {"image": images, "anatomy": anatomy}
    torch.manual_seed(0)
    inputs, targets = AutoencoderPrepareBatch(condition_key="anatomy", max_label=4, condition_prob=0.5)(batch)
    assert torch.equal(targets, images)
    from_mask = torch.tensor([torch.equal(i, a.float() / 4) for i, a in zip(inputs, anatomy)])
    from_image = torch.tensor([torch.equal(i, x) for i, x in zip(inputs, images)])
    assert torch.all(from_mask ^ from_image) and 16 < int(from_mask.sum()) < 48
    plain = AutoencoderPrepareBatch()(batch)
    assert torch.equal(plain[0], images) and torch.equal(plain[1], images)
    with pytest.raises(ValueError):
        AutoencoderPrepareBatch(condition_prob=1.5)


def test_latent_scale_factor_gives_unit_variance_latents(tmp_path):
    torch.manual_seed(0)
    items = [{"latent_mu": 3 * torch.randn(3, 8, 8) + 1, "latent_sigma": torch.full((3, 8, 8), 0.5)} for _ in range(50)]
    scale = latent_scale_factor(items, output_file=tmp_path / "scale.json")
    samples = torch.stack([(i["latent_mu"] + i["latent_sigma"] * torch.randn(3, 8, 8)) * scale for i in items])
    assert samples.std().item() == pytest.approx(1.0, abs=0.03)
    assert (tmp_path / "scale.json").is_file()
    with pytest.raises(ValueError):
        latent_scale_factor([])


class _Encoder(torch.nn.Module):
    embed_dim = 8

    def forward(self, prompts):
        return torch.stack([torch.full((2, 8), float(len(p))) for p in prompts])


def test_latent_diffusion_batch_samples_scaled_latents_noise_timesteps_and_prompts():
    prepare = LatentDiffusionPrepareBatch(1000, _Encoder(), scale_factor=2.0)
    batch = {
        "latent_mu": torch.ones(4, 3, 2, 2),
        "latent_sigma": torch.zeros(4, 3, 2, 2),
        "prompt": ["", "ab", "", "a"],
    }
    latents, target, args, kwargs = prepare(batch)
    assert torch.equal(latents, torch.full((4, 3, 2, 2), 2.0))
    assert torch.equal(target, kwargs["noise"]) and args == ()
    assert kwargs["timesteps"].shape == (4,) and 0 <= kwargs["timesteps"].min() and kwargs["timesteps"].max() < 1000
    assert kwargs["condition"][:, 0, 0].tolist() == [0.0, 2.0, 0.0, 1.0]


def test_controlnet_condition_channels():
    anatomy = torch.tensor([[[[0, 1], [3, 4]]]])
    pathology = torch.tensor([[[[0, 0], [1, 0]]]])
    condition = controlnet_condition(anatomy, pathology, max_label=4)
    assert condition.shape == (1, 5, 2, 2)
    assert condition[0, :, 1, 0].tolist() == [0, 0, 1, 0, 1]  # heart (label 3) with the finding
    assert condition[0, :, 0, 0].tolist() == [0, 0, 0, 0, 0]  # background
    assert controlnet_condition(None, pathology, 4)[0, :4].sum() == 0
    with pytest.raises(ValueError):
        controlnet_condition(None, None, 4)


def test_controlnet_initialised_from_the_unet_leaves_its_prediction_unchanged():
    torch.manual_seed(0)
    unet = DiffusionModelUNet(out_channels=3, **UNET).eval()
    torch.nn.init.normal_(unet.out[2].conv.weight, std=0.1)  # MONAI zero-initialises it; make the output non-trivial
    controlnet = ControlNet(conditioning_embedding_in_channels=5, conditioning_embedding_num_channels=(8, 8), **UNET)
    controlnet_from_unet(controlnet, unet)
    assert torch.equal(controlnet.conv_in.conv.weight, unet.conv_in.conv.weight)
    x, t, context = torch.randn(2, 3, 8, 8), torch.tensor([10, 500]), torch.randn(2, 4, 8)
    condition = torch.rand(1, 5, 16, 16).round()
    controlled = ControlledUNet(unet, controlnet.eval(), condition)
    with torch.no_grad():
        # zero-initialised output convolutions: the untrained ControlNet adds nothing; the condition is repeated to 2B
        torch.testing.assert_close(controlled(x, t, context), unet(x, t, context=context))
        torch.nn.init.normal_(controlnet.controlnet_mid_block.conv.weight)
        assert not torch.allclose(controlled(x, t, context), unet(x, t, context=context))


def test_pipeline_controlnet_mode(tiny_bundle, anatomy):
    from monai_xreal import XRealPipeline

    pipeline = XRealPipeline.from_bundle(tiny_bundle, device="cpu")
    pathology = torch.zeros_like(anatomy)
    pathology[..., 4:10, 4:10] = 1
    images = pipeline(anatomy, pathology, "Cardiomegaly", control="controlnet", num_inference_steps=3, seed=1)
    again = pipeline(anatomy, pathology, "Cardiomegaly", control="controlnet", num_inference_steps=3, seed=1)
    assert images.shape == (anatomy.shape[0], 1, *pipeline.spatial_shape) and torch.equal(images, again)
    # an empty pathology mask with a prompt is "no finding here" for the ControlNet, an error for XReal's stage 2
    pipeline(anatomy, torch.zeros_like(anatomy), "No Finding", control="controlnet", num_inference_steps=2)
    with pytest.raises(XRealInputError, match="pathology"):
        pipeline(anatomy, torch.zeros_like(anatomy), "No Finding", num_inference_steps=2)
    with pytest.raises(XRealInputError, match="control"):
        pipeline(anatomy, control="gan")
    pipeline.controlnet = None
    with pytest.raises(XRealInputError, match="ControlNet"):
        pipeline(anatomy, control="controlnet")


def test_local_perceptual_loss(tmp_path):
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    path = tmp_path / "features.ts"
    torch.jit.save(torch.jit.script(features), str(path))
    loss = LocalPerceptualLoss(path)
    a, b = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-7)
    value = loss(a, b)
    assert value.item() > 0
    a.requires_grad_(True)
    loss(a, b).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())
    with pytest.raises(XRealInputError, match="missing file"):
        LocalPerceptualLoss(tmp_path / "absent.ts")
    (tmp_path / "bad.ts").write_text("not torchscript")
    with pytest.raises(XRealInputError, match="TorchScript"):
        LocalPerceptualLoss(tmp_path / "bad.ts")


def test_rank_zero_keeps_every_handler_other_ranks_only_state_changing_ones(tmp_path):
    network = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    ema = EMAHandler(network)
    schedule = LrScheduleHandler(torch.optim.lr_scheduler.StepLR(optimizer, 1))
    loader = CheckpointLoader(load_path=str(tmp_path / "x.pt"), load_dict={"model": network})
    stats = StatsHandler()
    saver = CheckpointSaver(save_dir=str(tmp_path), save_dict={"model": network})
    handlers = [stats, ema, schedule, loader, saver]
    assert handlers_for_rank(handlers) == handlers  # not distributed: rank 0
    assert handlers_for_rank(handlers, rank=0) == handlers
    assert handlers_for_rank(handlers, rank=1) == [ema, schedule, loader]
    # the train configs pass their named dicts; None (a handler an override removed) is left out, and a handler
    # that joins collectives (every_rank, e.g. the noise filter) runs on every rank
    gathering = type("Gathering", (), {"every_rank": True})()
    named = {"stats": stats, "ema": ema, "preview": None, "noise_filter": gathering, "saver": saver}
    assert handlers_for_rank(named, rank=0) == [stats, ema, gathering, saver]
    assert handlers_for_rank(named, rank=1) == [ema, gathering]


def test_named_list_keeps_order_and_leaves_out_removed_entries():
    from monai_xreal.bundle import named_list

    assert named_list({"load": 1, "resize": None, "select": 3}) == [1, 3]
    assert named_list([1, None, 2]) == [1, 2] and named_list(None) == []


def test_scale_factor_file_round_trip_and_errors(tmp_path):
    from monai_xreal.bundle import read_scale_factor, write_scale_factor
    from monai_xreal.errors import XRealInputError

    path = write_scale_factor(tmp_path / "models" / "scale_factor.json", 0.9992797846770824, num_values=12)
    assert read_scale_factor(path) == 0.9992797846770824  # exactly: JSON keeps every digit of a float
    with pytest.raises(XRealInputError, match="missing file"):
        read_scale_factor(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text('{"scale": 1}')
    with pytest.raises(XRealInputError, match="bad.json"):
        read_scale_factor(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "net_id, io, extra",
    [
        ("network_def", {}, {"timesteps": torch.tensor([10]), "context": torch.zeros(1, 77, 384)}),
        ("controlled_unet", {}, {"timesteps": torch.tensor([10]), "context": torch.zeros(1, 77, 384)}),
        ("autoencoder_decoder", {"outputs#pred#num_channels": 1}, {}),
        ("controller_decoder", {"outputs#pred#num_channels": 1}, {}),
        ("autoencoder_encoder", {"inputs#image#num_channels": 1, "inputs#image#spatial_shape": [128, 128]}, {}),
    ],
)
def test_verify_net_in_out_for_each_network(net_id, io, extra):
    """MONAI's own check on every network of the generator bundle (networks that return tuples through a view)."""
    overrides = {f"_meta_#network_data_format#{key}": value for key, value in io.items()}
    overrides.update(
        controlled_unet="$monai_xreal.control.ControlledUNet(@diffusion_unet_def, @controlnet_def, "
        "torch.zeros(1, @max_label + 1, 128, 128))",
        autoencoder_decoder="$@autoencoder_def.decoder",
        controller_decoder="$@anatomy_controller_def.decoder",
        autoencoder_encoder="$torch.nn.Sequential(@autoencoder_def.encoder, @autoencoder_def.quant_conv_mu)",
    )
    verify_net_in_out(
        net_id=net_id, meta_file=str(ROOT / "configs" / "metadata.json"),
        config_file=[str(ROOT / "configs" / "common.json"), str(ROOT / "configs" / "inference.json")], device="cpu",
        bundle_root=str(ROOT),
        extra_forward_args=extra, **overrides,
    )  # fmt: skip
