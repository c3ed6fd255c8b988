# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal convert``: each format, written by its original implementation, converted into a bundle whose MONAI
networks match the original's outputs, and a full sampling run equal to diffusers' own pipeline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import diffusers
import pytest
import torch
import x_transformers
import yaml
from compvis_checkpoints import (
    AE_CHANNELS,
    CONTEXT,
    UNET_CHANNELS,
    L,
    _monai_to_ldm_unet,
    _unet,
    compvis_autoencoder_state,
    tiny_diffusers_autoencoder,
    write_tiny_stable_diffusion,
)
from conftest import randomise_weights

from monai_xreal import XRealPipeline
from monai_xreal.cli.main import main
from monai_xreal.errors import XRealInputError

TOLERANCE = 1e-4
TEXT_LENGTH = 16


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_metadata(bundle, inputs) -> dict:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())["conversion"]
    assert {k: v["sha256"] for k, v in meta["inputs"].items()} == {str(p): _sha256(Path(p)) for p in inputs}
    for name, digest in meta["outputs"].items():
        assert _sha256(bundle / name) == digest
    return meta


# -- CompVis / XReal --------------------------------------------------------------------------------------------------


def _original_config() -> dict:
    """A CompVis LatentDiffusion config of the tiny networks (the form of XReal's configs/xreal-diff-t2i.yml)."""
    unet = {"image_size": 8, "in_channels": 3, "out_channels": 3, "model_channels": UNET_CHANNELS[0],
            "attention_resolutions": [2, 4], "num_res_blocks": L, "channel_mult": [1, 2, 2], "num_heads": 4,
            "use_spatial_transformer": True, "transformer_depth": 1, "context_dim": CONTEXT}  # fmt: skip
    ddconfig = {
        "double_z": True,
        "z_channels": 3,
        "resolution": 32,
        "in_channels": 3,
        "out_ch": 3,
        "ch": AE_CHANNELS[0],
        "ch_mult": [1, 2, 2],
        "num_res_blocks": L,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    return {"model": {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
        "linear_start": 0.0015, "linear_end": 0.0295, "timesteps": 1000, "scale_factor": 0.18215, "image_size": 8,
        "channels": 3, "unet_config": {"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet},
        "first_stage_config": {"target": "ldm.models.autoencoder.AutoencoderKL",
                               "params": {"embed_dim": 3, "ddconfig": ddconfig}},
        "cond_stage_config": {"target": "ldm.modules.encoders.modules.BERTEmbedder",
                              "params": {"n_embed": CONTEXT, "n_layer": 2, "max_seq_len": TEXT_LENGTH}},
    }}}  # fmt: skip


@pytest.fixture(scope="module")
def xreal_release(tmp_path_factory):
    """XReal's release layout (backbone.pth + anatomy_controller.pth, Lightning dicts) of tiny random networks."""
    folder = tmp_path_factory.mktemp("xreal")
    unet = randomise_weights(_unet())
    autoencoder, controller = tiny_diffusers_autoencoder(), randomise_weights(tiny_diffusers_autoencoder(), seed=1)
    text = x_transformers.TransformerWrapper(
        num_tokens=30522, max_seq_len=TEXT_LENGTH, attn_layers=x_transformers.Encoder(dim=CONTEXT, depth=2, heads=2)
    )
    text = randomise_weights(text, seed=2, std=0.05).eval()
    betas = torch.linspace(0.0015**0.5, 0.0295**0.5, 1000, dtype=torch.float64) ** 2
    backbone = {"model.diffusion_model." + _monai_to_ldm_unet(k): v for k, v in unet.state_dict().items()}
    backbone |= {"first_stage_model." + k: v for k, v in compvis_autoencoder_state(autoencoder).items()}
    backbone |= {"cond_stage_model.transformer." + k: v for k, v in text.state_dict().items()}
    backbone |= {"betas": betas.float(), "model_ema.decay": torch.tensor(0.9999)}
    backbone |= {"model_ema.diffusion_model" + k[len("model.diffusion_model.") :].replace(".", ""): v + 1
                 for k, v in backbone.items() if k.startswith("model.diffusion_model.")}  # fmt: skip
    torch.save({"state_dict": backbone, "global_step": 10}, folder / "backbone.pth")
    torch.save({"state_dict": {**compvis_autoencoder_state(controller), "loss.logvar": torch.zeros(())}},
               folder / "anatomy_controller.pth")  # fmt: skip
    torch.save({"state_dict": {**compvis_autoencoder_state(autoencoder), "loss.logvar": torch.zeros(())}},
               folder / "ldm_ae.pth")  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(_original_config()))
    return folder, text


def test_compvis_conversion_matches_diffusers_single_file_and_x_transformers(xreal_release, tmp_path):
    folder, text = xreal_release
    config = folder / "config.yaml"
    out = tmp_path / "xreal_bundle"
    argv = ["convert", "--from", "compvis", "--input", str(folder), "--output-bundle", str(out),
            "--original-config", str(config), "--safetensors"]  # fmt: skip
    assert main(argv) == 0
    _check_metadata(out, [folder / "backbone.pth", folder / "anatomy_controller.pth", folder / "ldm_ae.pth"])
    assert "ldm_ae.pth equals the backbone's first_stage_model" in (out / "docs" / "README.md").read_text()
    assert (out / "models" / "model.safetensors").is_file() and (out / "models" / "model_text_encoder.pt").is_file()
    pipeline = XRealPipeline.from_bundle(out, device="cpu")
    assert _fused_attention(pipeline.unet) and _fused_attention(pipeline.autoencoder)

    # the originals: diffusers' single-file loader with the local original config, and x-transformers
    single_file = {"original_config": str(config), "local_files_only": True}
    unet = diffusers.UNet2DConditionModel.from_single_file(str(folder / "backbone.pth"), **single_file).eval()
    vae = diffusers.AutoencoderKL.from_single_file(str(folder / "backbone.pth"), **single_file).eval()
    x, t, context = torch.randn(2, 3, 8, 8), torch.tensor([3, 900]), torch.randn(2, 5, CONTEXT)
    images, latents = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 8, 8)
    prompts = ["Cardiomegaly", ""]
    ids = pipeline.text_encoder.tokenize(prompts)
    with torch.no_grad():
        assert (pipeline.unet(x, t, context=context) - unet(x, t, encoder_hidden_states=context).sample).abs().max() < (
            TOLERANCE
        )
        mu, sigma = pipeline.autoencoder.encode(images)
        posterior = vae.encode(images).latent_dist
        assert (mu - posterior.mean).abs().max() < TOLERANCE and (sigma - posterior.std).abs().max() < TOLERANCE
        assert (pipeline.autoencoder.decode(latents) - vae.decode(latents).sample).abs().max() < TOLERANCE
        embeddings = pipeline.text_encoder(prompts)
        assert (embeddings - text(ids, return_embeddings=True)).abs().max() < TOLERANCE
    assert ids[0, 0] == 101 and ids[1, :3].tolist() == [101, 102, 0]  # [CLS] [SEP] [PAD]: bert-base-uncased ids
    assert pipeline.scale_factor == 0.18215 and pipeline.spatial_shape == (32, 32)
    assert float(pipeline.scheduler.betas[-1]) == pytest.approx(0.0295)
    assert pipeline.families["autoencoder"] == pipeline.families["anatomy_controller"]

    anatomy = torch.zeros(1, 1, 32, 32)
    anatomy[..., 8:24, 4:14], anatomy[..., 8:24, 18:28], anatomy[..., 16:24, 12:20] = 1, 2, 3
    pathology = torch.zeros(1, 1, 32, 32)
    pathology[..., 10:18, 6:12] = 1
    sample = pipeline(anatomy, pathology, "Pleural Effusion", num_inference_steps=2, seed=0)
    assert sample.shape == (1, 1, 32, 32) and 0 <= sample.min() and sample.max() <= 1


def test_compvis_ema_weights_and_refusals(xreal_release, tmp_path):
    folder, _ = xreal_release
    config = str(folder / "config.yaml")
    assert main(["convert", "--from", "compvis", "--input", str(folder / "backbone.pth"), "--output-bundle",
                 str(tmp_path / "ema"), "--original-config", config, "--ema"]) == 0  # fmt: skip
    trained = torch.load(folder / "backbone.pth", weights_only=True)["state_dict"]
    ema = torch.load(tmp_path / "ema" / "models" / "model.pt", weights_only=True)
    assert torch.equal(ema["out.2.conv.weight"], trained["model.diffusion_model.out.2.weight"] + 1)
    assert not (tmp_path / "ema" / "models" / "model_anatomy_controller.pt").exists()  # a file input: backbone only

    from monai_xreal.interop.convert import from_compvis

    with pytest.raises(XRealInputError, match="not a CompVis latent diffusion checkpoint"):
        from_compvis(folder / "anatomy_controller.pth")
    wrong = _original_config()
    wrong["model"]["params"]["linear_end"] = 0.012
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(wrong))
    with pytest.raises(XRealInputError, match="does not match the betas saved"):
        from_compvis(folder, tmp_path / "wrong.yaml")


def test_convert_cli_reports_bad_input_in_one_line(xreal_release, tmp_path, capsys):
    folder, _ = xreal_release
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    cases = [
        (["--from", "compvis", "--input", str(folder), "--output-bundle", str(tmp_path / "taken")], "not empty"),
        (["--from", "diffusers", "--input", str(folder), "--output-bundle", str(tmp_path / "a")], "missing file"),
        (["--from", "model-zoo", "--input", str(folder), "--output-bundle", str(tmp_path / "b")], "missing file"),
    ]
    for argv, message in cases:
        assert main(["convert", *argv]) == 2
        err = capsys.readouterr().err.strip()
        last = err.splitlines()[-1]  # after the progress bar, if it started
        assert last.startswith("monai-xreal convert: error:") and message in last and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-written left behind


def test_full_size_xreal_checkpoint_uses_every_key():
    """XReal's full-size networks (names and shapes from the CompVis classes, tests/data) on the meta device: every
    original key lands on a MONAI parameter of the same shape, and no MONAI parameter is left without one."""
    from pathlib import Path

    from monai_xreal.interop.compvis import ldm_autoencoder_to_monai, ldm_unet_to_monai
    from monai_xreal.interop.compvis_arguments import (
        XREAL_ARCHITECTURE,
        compvis_autoencoder_arguments,
        compvis_text_encoder_arguments,
        compvis_unet_arguments,
        read_original_config,
    )
    from monai_xreal.networks import CompVisAutoencoderKL, CompVisDiffusionModelUNet
    from monai_xreal.text import BERTEmbedder

    original = json.loads((Path(__file__).parents[1] / "data" / "xreal_full_size_keys.json").read_text())

    def tensors(group, prefix):
        return {k[len(prefix) :]: torch.empty(shape, device="meta") for k, shape in original[group].items()}

    settings = read_original_config(None)  # XReal's published values
    unet, ae, text = (
        tensors("unet", "model.diffusion_model."),
        tensors("autoencoder", "first_stage_model."),
        tensors("text_encoder", "cond_stage_model."),
    )
    unet_args, ae_args = compvis_unet_arguments(unet, settings), compvis_autoencoder_arguments(ae)
    assert unet_args["channels"] == [224, 448, 896, 896] and unet_args["attention_levels"] == [False, True, True, True]
    assert unet_args["num_head_channels"][1:] == [56, 112, 112] and unet_args["cross_attention_dim"] == 1280
    assert ae_args["channels"] == [128, 256, 512] and ae_args["latent_channels"] == 3
    # the architecture the full-size benchmark builds without a checkpoint is the one read from XReal's keys
    assert unet_args == XREAL_ARCHITECTURE["unet"] and ae_args == XREAL_ARCHITECTURE["autoencoder"]
    assert compvis_text_encoder_arguments(text, settings) == XREAL_ARCHITECTURE["text_encoder"]
    with torch.device("meta"):
        pairs = [
            (CompVisDiffusionModelUNet(**unet_args), ldm_unet_to_monai(unet, 2), "unet"),
            (
                CompVisAutoencoderKL(**ae_args),
                ldm_autoencoder_to_monai(ae, 2, ae_args["attention_levels"]),
                "autoencoder",
            ),
            (BERTEmbedder(**compvis_text_encoder_arguments(text, settings)), text, "text_encoder"),
        ]
    for network, converted, group in pairs:
        ours = {k: tuple(v.shape) for k, v in network.state_dict().items()}
        assert ours == {k: tuple(v.shape) for k, v in converted.items()}
        assert sum(p.numel() for p in network.parameters()) == original["parameters"][group]


# -- diffusers --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roentgen_like")
    return folder, write_tiny_stable_diffusion(folder)


def test_diffusers_conversion_samples_like_the_diffusers_pipeline(diffusers_folder, tmp_path):
    folder, reference = diffusers_folder
    out = tmp_path / "roentgen_bundle"
    assert main(["convert", "--from", "diffusers", "--input", str(folder), "--output-bundle", str(out)]) == 0
    meta = _check_metadata(out, json.loads((out / "configs" / "metadata.json").read_text())["conversion"]["inputs"])
    assert any(k.endswith("unet/diffusion_pytorch_model.safetensors") for k in meta["inputs"])
    pipeline = XRealPipeline.from_bundle(out, device="cpu")
    assert _fused_attention(pipeline.unet) and _fused_attention(pipeline.autoencoder)
    assert pipeline.image_range == (-1.0, 1.0) and pipeline.anatomy_controller is None

    steps, guidance, seed, prompt = 4, 7.5, 3, "right pleural effusion"
    ours = pipeline(prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, eta=0.0, seed=seed)
    noise = torch.randn((1, 3, 8, 8), generator=torch.Generator().manual_seed(seed))
    reference.set_progress_bar_config(disable=True)
    theirs = reference(prompt, num_inference_steps=steps, guidance_scale=guidance, eta=0.0, latents=noise,
                       output_type="pt", height=32, width=32).images  # fmt: skip
    assert ours.shape == (1, 1, 32, 32)
    assert (ours - theirs.mean(dim=1, keepdim=True)).abs().max() < TOLERANCE
    assert (ours - ours.mean()).abs().max() > 0.01  # not a constant image


# -- MONAI model zoo --------------------------------------------------------------------------------------------------

_ZOO_AE = {
    "_target_": "monai.networks.nets.AutoencoderKL",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 3,
    "channels": [32, 32],
    "num_res_blocks": 1,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "attention_levels": [False, False],
    "with_encoder_nonlocal_attn": True,
    "with_decoder_nonlocal_attn": False,
}
_ZOO_UNET = {"_target_": "monai.networks.nets.DiffusionModelUNet", "spatial_dims": 2, "in_channels": 3,
             "out_channels": 3, "channels": [32, 64], "num_res_blocks": 1, "attention_levels": [False, True],
             "norm_num_groups": 32, "norm_eps": 1e-6, "num_head_channels": [0, 64], "with_conditioning": True,
             "transformer_num_layers": 1, "cross_attention_dim": CONTEXT}  # fmt: skip


def _fused_attention(network: torch.nn.Module) -> bool:
    """Every attention block of the network runs PyTorch's fused scaled_dot_product_attention."""
    flags = [m.use_flash_attention for m in network.modules() if hasattr(m, "use_flash_attention")]
    return bool(flags) and all(flags)


def _generative_names(state: dict) -> dict:
    """MONAI core names back to MONAI Generative 0.2's (what the model-zoo bundle's weight files hold)."""
    old = {}
    for key, value in state.items():
        key = key.replace("postconv", "conv")
        if "transformer_blocks" in key:
            key = key.replace(".out_proj.", ".to_out.0.")
        else:
            key = key.replace(".attn.out_proj.", ".proj_attn.").replace(".attn.to_", ".to_")
        old[key] = value
    return old


def test_model_zoo_bundle_with_generative_names_converts_exactly(diffusers_folder, tmp_path):
    from monai.bundle import ConfigParser

    zoo = tmp_path / "cxr_image_synthesis_latent_diffusion_model"
    (zoo / "configs").mkdir(parents=True)
    (zoo / "models").mkdir()
    scheduler = {"_target_": "monai.networks.schedulers.DDIMScheduler", "_requires_": ["@load_diffusion"],
                 "beta_start": 0.0015, "beta_end": 0.0205, "num_train_timesteps": 1000,
                 "schedule": "scaled_linear_beta", "prediction_type": "v_prediction", "clip_sample": False}  # fmt: skip
    (zoo / "configs" / "inference.json").write_text(json.dumps({
        "bundle_root": ".", "model_dir": "$@bundle_root + '/models'", "autoencoder_def": _ZOO_AE,
        "load_autoencoder_path": "$@model_dir + '/autoencoder.pth'", "diffusion_def": _ZOO_UNET,
        "load_diffusion_path": "$@model_dir + '/diffusion_model.pth'", "scheduler": scheduler,
    }))  # fmt: skip
    originals = {}
    for name, definition in (("autoencoder", _ZOO_AE), ("diffusion_model", _ZOO_UNET)):
        originals[name] = randomise_weights(ConfigParser({"n": definition}).get_parsed_content("n")).eval()
        torch.save(_generative_names(originals[name].state_dict()), zoo / "models" / f"{name}.pth")
    assert any(".proj_attn." in k for k in torch.load(zoo / "models" / "autoencoder.pth", weights_only=True))

    out = tmp_path / "zoo_bundle"
    argv = ["convert", "--from", "model-zoo", "--input", str(zoo), "--output-bundle", str(out)]
    assert main(argv) == 2  # the text encoder (SD 2.1-base CLIP) must be a local folder
    assert main([*argv, "--text-encoder", str(diffusers_folder[0])]) == 0
    pipeline = XRealPipeline.from_bundle(out, device="cpu")
    assert pipeline.scale_factor == 0.3 and pipeline.scheduler.prediction_type == "v_prediction"
    assert pipeline.spatial_shape == (128, 128) and pipeline.autoencoder.encoder.in_channels == 1
    x, t, context, images = (
        torch.randn(2, 3, 8, 8),
        torch.tensor([1, 500]),
        torch.randn(2, 4, CONTEXT),
        torch.rand(2, 1, 16, 16),
    )
    # the converter switches on fused attention (use_flash_attention): the same outputs to float rounding
    assert _fused_attention(pipeline.unet) and _fused_attention(pipeline.autoencoder)
    with torch.no_grad():
        ours, theirs = pipeline.unet(x, t, context=context), originals["diffusion_model"](x, t, context=context)
        assert torch.allclose(ours, theirs, atol=1e-5)
        assert torch.allclose(
            pipeline.autoencoder.encode(images)[0], originals["autoencoder"].encode(images)[0], atol=1e-5
        )
    sample = pipeline(prompt="effusion", num_inference_steps=2, seed=0)
    assert sample.shape == (1, 1, 128, 128)

    from monai_xreal.interop.generative import load_generative_state

    old = _generative_names(originals["autoencoder"].state_dict())
    old["encoder.blocks.0.extra"] = torch.zeros(1)
    with pytest.raises(XRealInputError, match="no rename uses"):
        load_generative_state(ConfigParser({"n": _ZOO_AE}).get_parsed_content("n"), old, "autoencoder.pth")
    del old["encoder.blocks.0.extra"]
    old.pop("decoder.blocks.0.conv.weight")
    with pytest.raises(XRealInputError, match="unset.*decoder.blocks.0.conv.weight"):
        load_generative_state(ConfigParser({"n": _ZOO_AE}).get_parsed_content("n"), old, "autoencoder.pth")


def test_pipeline_refuses_an_anatomy_controller_of_another_family(tiny_bundle):
    parts = XRealPipeline.from_bundle(tiny_bundle, device="cpu")
    build = dict(autoencoder=parts.autoencoder, unet=parts.unet, text_encoder=parts.text_encoder,
                 scheduler=parts.scheduler, anatomy_controller=parts.anatomy_controller)  # fmt: skip
    XRealPipeline(**build, families={"autoencoder": "xreal:1", "anatomy_controller": "xreal:1"})
    with pytest.raises(XRealInputError, match="model family 'cheff:2'.*'xreal:1'"):
        XRealPipeline(**build, families={"autoencoder": "xreal:1", "anatomy_controller": "cheff:2"})
