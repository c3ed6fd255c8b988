# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""diffusers-format weights (Stable Diffusion fine-tunes such as RoentGen) to MONAI names and network arguments.

Reads a diffusers folder's ``config.json`` and tensors only; the ``diffusers`` package itself is not needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from monai_xreal.errors import XRealInputError
from monai_xreal.interop.compvis import autoencoder_keys_to_monai

__all__ = [
    "diffusers_autoencoder_arguments",
    "diffusers_autoencoder_to_monai",
    "diffusers_unet_arguments",
    "diffusers_unet_to_monai",
]  # fmt: skip

_RESNET = (("conv1.", "conv1.conv."), ("conv2.", "conv2.conv."), ("conv_shortcut.", "skip_connection.conv."),
           ("norm1.", "norm1."), ("norm2.", "norm2."), ("time_emb_proj.", "time_emb_proj."))  # fmt: skip
_TRANSFORMER = ((".to_out.0.", ".out_proj."), (".ff.net.0.proj.", ".ff.linear1."), (".ff.net.2.", ".ff.linear2."))


def _renamed(sub: str, table, key: str) -> str:
    for old, new in table:
        if sub.startswith(old):
            return new + sub[len(old) :]
    raise XRealInputError("input", f"unknown diffusers key {key!r}")


def _transformer(sub: str) -> str:
    sub = re.sub(r"^(proj_in|proj_out)\.", r"\1.conv.", sub)
    for old, new in _TRANSFORMER:
        sub = sub.replace(old, new)
    return sub


def diffusers_unet_to_monai(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``UNet2DConditionModel`` state dict in :class:`~monai_xreal.networks.CompVisDiffusionModelUNet` names.

    Raises:
        XRealInputError: a key outside the map (e.g. an added class or time-condition embedding), named.
    """
    fixed = {"conv_in.": "conv_in.conv.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.conv.",
             "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2."}  # fmt: skip
    converted = {}
    for key, value in state.items():
        head = next((h for h in fixed if key.startswith(h)), None)
        if head is not None:
            name = fixed[head] + key[len(head) :]
        elif match := re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            side, level, kind, slot, sub = match.groups()
            base = f"{side}_blocks.{level}.{kind}.{slot}."
            name = base + (_renamed(sub, _RESNET, key) if kind == "resnets" else _transformer(sub))
        elif match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            name = f"down_blocks.{match[1]}.downsampler.op.conv.{match[2]}"
        elif match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            name = f"up_blocks.{match[1]}.upsampler.postconv.conv.{match[2]}"
        elif match := re.match(r"mid_block\.(resnets\.[01]|attentions\.0)\.(.*)", key):
            part, sub = match.groups()
            if part == "attentions.0":
                name = "middle_block.attention." + _transformer(sub)
            else:
                name = f"middle_block.resnet_{int(part[-1]) + 1}." + _renamed(sub, _RESNET, key)
        else:
            raise XRealInputError("input", f"unknown diffusers UNet key {key!r}")
        if name.endswith((".proj_in.conv.weight", ".proj_out.conv.weight")) and value.ndim == 2:
            value = value[:, :, None, None]  # use_linear_projection (Stable Diffusion 2)
        converted[name] = value
    return converted


def _require(config: Mapping, key: str, allowed, what: str) -> None:
    if config.get(key, allowed[0]) not in allowed:
        raise XRealInputError(
            "input", f"{what} {key}={config.get(key)!r} has no MONAI equivalent (needs {allowed[0]!r})"
        )


def diffusers_unet_arguments(config: Mapping) -> dict:
    """``CompVisDiffusionModelUNet`` arguments from a diffusers ``unet/config.json``.

    diffusers' ``attention_head_dim`` is the number of heads when ``num_attention_heads`` is unset (its historical
    naming); MONAI takes channels per head.

    Raises:
        XRealInputError: a feature MONAI's UNet cannot represent (class embeddings, other time embeddings, several
            transformer layers per level given per level, ...).
    """
    for key, allowed in (
        ("class_embed_type", (None,)),
        ("addition_embed_type", (None,)),
        ("flip_sin_to_cos", (True,)),
        ("freq_shift", (0,)),
        ("time_embedding_type", ("positional",)),
        ("act_fn", ("silu",)),
        ("resnet_time_scale_shift", ("default",)),
        ("mid_block_type", ("UNetMidBlock2DCrossAttn",)),
    ):
        _require(config, key, allowed, "UNet")  # fmt: skip
    channels = list(config["block_out_channels"])
    attention = ["CrossAttn" in block for block in config["down_block_types"]]
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    layers = config.get("transformer_layers_per_block", 1)
    if not isinstance(layers, int):
        raise XRealInputError("input", f"UNet transformer_layers_per_block={layers!r}: MONAI takes one number")
    return {
        "spatial_dims": 2, "in_channels": config["in_channels"], "out_channels": config["out_channels"],
        "channels": channels, "attention_levels": attention, "num_res_blocks": config["layers_per_block"],
        # every level's value, attention or not: MONAI's middle block takes the last level's
        "num_head_channels": [c // h for c, h in zip(channels, heads)],
        "norm_num_groups": config.get("norm_num_groups", 32), "norm_eps": config.get("norm_eps", 1e-5),
        "with_conditioning": True, "cross_attention_dim": config["cross_attention_dim"],
        "transformer_num_layers": layers, "upcast_attention": bool(config.get("upcast_attention", False)),
    }  # fmt: skip


# -- autoencoder ------------------------------------------------------------------------------------------------------

_AE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "attn.to_q",
    "to_k": "attn.to_k",
    "to_v": "attn.to_v",
    "to_out.0": "attn.out_proj",
    "query": "attn.to_q",
    "key": "attn.to_k",
    "value": "attn.to_v",
    "proj_attn": "attn.out_proj",
}  # fmt: skip  (current names, then those before diffusers 0.14)


def _autoencoder_block_indices(levels: int, res_blocks: int) -> dict[str, dict[str, int]]:
    encoder, index = {}, 1
    for level in range(levels):
        for slot in range(res_blocks):
            encoder[f"down_blocks.{level}.resnets.{slot}"] = index
            index += 1
        if level != levels - 1:
            encoder[f"down_blocks.{level}.downsamplers.0"] = index
            index += 1
    encoder.update({"mid_block.resnets.0": index, "mid_block.attentions.0": index + 1, "mid_block.resnets.1": index + 2,
                    "conv_norm_out": index + 3, "conv_out": index + 4})  # fmt: skip
    decoder, index = {"mid_block.resnets.0": 1, "mid_block.attentions.0": 2, "mid_block.resnets.1": 3}, 4
    for level in range(levels):  # diffusers numbers the decoder's levels in the order they run, as MONAI does
        for slot in range(res_blocks + 1):
            decoder[f"up_blocks.{level}.resnets.{slot}"] = index
            index += 1
        if level != levels - 1:
            decoder[f"up_blocks.{level}.upsamplers.0"] = index
            index += 1
    decoder.update({"conv_norm_out": index, "conv_out": index + 1})
    return {"encoder": encoder, "decoder": decoder}


def diffusers_autoencoder_arguments(config: Mapping) -> dict:
    """:class:`~monai_xreal.networks.CompVisAutoencoderKL` arguments from a diffusers ``vae/config.json``."""
    return {
        "spatial_dims": 2, "in_channels": config["in_channels"], "out_channels": config["out_channels"],
        "channels": list(config["block_out_channels"]), "num_res_blocks": config["layers_per_block"],
        "latent_channels": config["latent_channels"], "norm_num_groups": config.get("norm_num_groups", 32),
    }  # fmt: skip


def diffusers_autoencoder_to_monai(
    state: Mapping[str, torch.Tensor], levels: int, res_blocks: int
) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in :class:`~monai_xreal.networks.CompVisAutoencoderKL` names.

    Args:
        state: the autoencoder's tensors.
        levels: ``len(block_out_channels)``.
        res_blocks: ``layers_per_block`` (the decoder has one more per level).
    """
    return autoencoder_keys_to_monai(state, _autoencoder_block_indices(levels, res_blocks), _autoencoder_block)


def _autoencoder_block(path: str, sub: str, key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    if path == "conv_norm_out":
        return sub, value
    if path == "conv_out" or "downsamplers" in path:
        return "conv." + sub, value
    if "upsamplers" in path:
        return "post" + sub.replace("conv.", "conv.conv.", 1), value
    if "attentions" in path:
        layer, parameter = sub.rsplit(".", 1)
        if layer not in _AE_ATTENTION:
            raise XRealInputError("input", f"unknown diffusers autoencoder key {key!r}")
        return f"{_AE_ATTENTION[layer]}.{parameter}", value[:, :, 0, 0] if value.ndim == 4 else value
    return _renamed(sub, (*_RESNET[:2], ("conv_shortcut.", "nin_shortcut.conv."), *_RESNET[3:5]), key), value
