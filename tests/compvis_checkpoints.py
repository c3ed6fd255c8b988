# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Tiny CompVis checkpoints for the converter tests (tests/interop/test_compvis.py, tests/test_convert.py): the
network sizes, a MONAI UNet written under CompVis names, and a diffusers autoencoder under CompVis names."""

from __future__ import annotations

import json
import re

import diffusers
import torch
import transformers
from conftest import randomise_weights
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from monai_xreal.networks import CompVisDiffusionModelUNet

L = 2
UNET_LEVELS = (False, True, True)
UNET_CHANNELS = (32, 64, 64)
CONTEXT = 24


def _monai_to_ldm_unet(key: str) -> str:
    """Test-side inverse of the map, so that a MONAI network can be written as a CompVis checkpoint."""
    res = (
        ("norm1.", "in_layers.0."),
        ("conv1.conv.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.conv.", "out_layers.3."),
        ("skip_connection.conv.", "skip_connection."),
    )

    def resblock(sub):
        return next(new + sub[len(old) :] for old, new in res if sub.startswith(old))

    def transformer(sub):
        sub = re.sub(r"^(proj_in|proj_out)\.conv\.", r"\1.", sub)
        return (
            sub.replace(".out_proj.", ".to_out.0.")
            .replace(".ff.linear1.", ".ff.net.0.proj.")
            .replace(".ff.linear2.", ".ff.net.2.")
        )

    if key.startswith("conv_in.conv."):
        return "input_blocks.0.0." + key.rsplit(".", 1)[1]
    if key.startswith("out.2.conv."):
        return "out.2." + key.rsplit(".", 1)[1]
    if key.startswith(("time_embed.", "out.0.")):
        return key
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        n = 1 + int(m[1]) * (L + 1) + int(m[3])
        return (
            f"input_blocks.{n}.0." + resblock(m[4]) if m[2] == "resnets" else f"input_blocks.{n}.1." + transformer(m[4])
        )
    if m := re.match(r"down_blocks\.(\d+)\.downsampler\.op\.conv\.(.*)", key):
        return f"input_blocks.{1 + int(m[1]) * (L + 1) + L}.0.op.{m[2]}"
    if m := re.match(r"middle_block\.(resnet_1|attention|resnet_2)\.(.*)", key):
        slot = {"resnet_1": 0, "attention": 1, "resnet_2": 2}[m[1]]
        return f"middle_block.{slot}." + (transformer(m[2]) if slot == 1 else resblock(m[2]))
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        n = int(m[1]) * (L + 1) + int(m[3])
        return (
            f"output_blocks.{n}.0." + resblock(m[4])
            if m[2] == "resnets"
            else f"output_blocks.{n}.1." + transformer(m[4])
        )
    m = re.match(r"up_blocks\.(\d+)\.upsampler\.postconv\.conv\.(.*)", key)
    level = int(m[1])
    return f"output_blocks.{level * (L + 1) + L}.{2 if UNET_LEVELS[::-1][level] else 1}.conv.{m[2]}"


def _unet() -> CompVisDiffusionModelUNet:
    return CompVisDiffusionModelUNet(
        spatial_dims=2, in_channels=3, out_channels=3, channels=UNET_CHANNELS, attention_levels=UNET_LEVELS,
        num_res_blocks=L, num_head_channels=(0, 16, 16), with_conditioning=True, cross_attention_dim=CONTEXT,
    )  # fmt: skip


AE_CHANNELS = (32, 64, 64)


def _ldm_autoencoder_names() -> list[str]:
    """The CompVis autoencoder's parameter names (ldm/modules/diffusionmodules/model.py), for these channels."""

    def resblock(prefix, channels_in, channels_out):
        names = [f"{prefix}.{layer}.{p}" for layer in ("norm1", "conv1", "norm2", "conv2") for p in ("weight", "bias")]
        return names + (
            [f"{prefix}.nin_shortcut.weight", f"{prefix}.nin_shortcut.bias"] if channels_in != channels_out else []
        )

    def attention(prefix):
        return [f"{prefix}.{layer}.{p}" for layer in ("norm", "q", "k", "v", "proj_out") for p in ("weight", "bias")]

    def middle(part):
        return (
            resblock(f"{part}.mid.block_1", 1, 1)
            + attention(f"{part}.mid.attn_1")
            + resblock(f"{part}.mid.block_2", 1, 1)
        )

    names, channels_in = ["encoder.conv_in.weight", "encoder.conv_in.bias"], AE_CHANNELS[0]
    for level, channels in enumerate(AE_CHANNELS):
        for slot in range(L):
            names += resblock(f"encoder.down.{level}.block.{slot}", channels_in, channels)
            channels_in = channels
        if level != len(AE_CHANNELS) - 1:
            names += [f"encoder.down.{level}.downsample.conv.weight", f"encoder.down.{level}.downsample.conv.bias"]
    names += middle("encoder") + [
        "encoder.norm_out.weight",
        "encoder.norm_out.bias",
        "encoder.conv_out.weight",
        "encoder.conv_out.bias",
        "decoder.conv_in.weight",
        "decoder.conv_in.bias",
    ]
    names += middle("decoder")
    channels_in = AE_CHANNELS[-1]
    for level in reversed(range(len(AE_CHANNELS))):
        for slot in range(L + 1):
            names += resblock(f"decoder.up.{level}.block.{slot}", channels_in, AE_CHANNELS[level])
            channels_in = AE_CHANNELS[level]
        if level != 0:
            names += [f"decoder.up.{level}.upsample.conv.weight", f"decoder.up.{level}.upsample.conv.bias"]
    return names + ["decoder.norm_out.weight", "decoder.norm_out.bias", "decoder.conv_out.weight",
                    "decoder.conv_out.bias", "quant_conv.weight", "quant_conv.bias", "post_quant_conv.weight",
                    "post_quant_conv.bias"]  # fmt: skip


def compvis_autoencoder_state(reference: diffusers.AutoencoderKL) -> dict[str, torch.Tensor]:
    """A diffusers autoencoder's tensors under their CompVis names, as diffusers' own converter reads them."""
    # which diffusers tensor each CompVis name is, by diffusers' own converter (each name probed with its index)
    names = _ldm_autoencoder_names()
    probe = {f"first_stage_model.{name}": torch.tensor([float(i)]) for i, name in enumerate(names)}
    config = {"down_block_types": reference.config.down_block_types, "up_block_types": reference.config.up_block_types}
    to_ldm = {key: names[int(v.item())] for key, v in convert_ldm_vae_checkpoint(probe, config).items()}
    theirs = reference.state_dict()
    assert set(to_ldm) == set(theirs)  # every diffusers tensor has its CompVis name
    checkpoint = {}
    for key, name in to_ldm.items():
        value = theirs[key]
        is_attention = name.split(".")[-2] in ("q", "k", "v", "proj_out")
        checkpoint[name] = value[:, :, None, None] if is_attention and value.ndim == 2 else value  # CompVis: 1x1 convs
    return checkpoint


def tiny_diffusers_autoencoder() -> diffusers.AutoencoderKL:
    return randomise_weights(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=AE_CHANNELS, layers_per_block=L,
        latent_channels=3, norm_num_groups=32,
    ))  # fmt: skip


def tiny_clip(folder, text_length: int = 16):
    """A random CLIP text encoder and a byte-level CLIP tokenizer, saved like a diffusers model's folders."""
    byte_chars = [chr(c) for c in range(33, 127)]
    vocab = {t: i for i, t in enumerate(byte_chars + [c + "</w>" for c in byte_chars])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"),
        pad_token="<|endoftext|>", model_max_length=text_length,
    )  # fmt: skip
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    config = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=CONTEXT, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=text_length, eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"],
    )  # fmt: skip
    text = randomise_weights(transformers.CLIPTextModel(config), seed=3, std=0.05).eval()
    text.save_pretrained(str(folder / "text_encoder"))
    return tokenizer, text


def write_tiny_stable_diffusion(folder, prediction_type: str = "epsilon"):
    """A random Stable-Diffusion-format model (CLIP text encoder, 3-channel VAE, UNet) saved by diffusers' own
    ``save_pretrained`` into ``folder``; returns the ``StableDiffusionPipeline``."""
    tokenizer, text = tiny_clip(folder)
    unet = randomise_weights(diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=UNET_CHANNELS, layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CONTEXT, attention_head_dim=4, norm_num_groups=32,
    ), std=0.05)  # fmt: skip
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                        prediction_type=prediction_type)  # fmt: skip
    pipe = diffusers.StableDiffusionPipeline(
        vae=tiny_diffusers_autoencoder(), text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(str(folder))
    return pipe
