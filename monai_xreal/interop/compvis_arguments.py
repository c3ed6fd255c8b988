# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Network arguments for CompVis checkpoints, read from the tensors' shapes and, where shapes cannot tell (heads,
image size, schedule), from the original YAML config or XReal's published values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.utils import optional_import

from monai_xreal.errors import XRealInputError

yaml, has_yaml = optional_import("yaml")

__all__ = [
    "XREAL_ARCHITECTURE",
    "XREAL_DEFAULTS",
    "compvis_autoencoder_arguments",
    "compvis_text_encoder_arguments",
    "compvis_unet_arguments",
    "read_original_config",
]  # fmt: skip

XREAL_DEFAULTS: dict[str, Any] = {
    "num_heads": 8,
    "num_head_channels": -1,
    "image_size": 256,
    "linear_start": 0.0015,
    "linear_end": 0.0295,
    "timesteps": 1000,
    "beta_schedule": "linear",
    "parameterization": "eps",
    "scale_factor": 0.18215,
    "text_dim_head": 64,
}
"""What XReal's ``configs/xreal-diff-t2i.yml`` sets where a checkpoint's shapes do not say (Cheff's are the same)."""

XREAL_ARCHITECTURE: dict[str, dict[str, Any]] = {
    "unet": {
        "spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [224, 448, 896, 896],
        "attention_levels": [False, True, True, True], "num_res_blocks": 2, "num_head_channels": [28, 56, 112, 112],
        "norm_num_groups": 32, "with_conditioning": True, "transformer_num_layers": 1, "cross_attention_dim": 1280,
    },
    "autoencoder": {
        "spatial_dims": 2, "in_channels": 3, "out_channels": 3, "channels": [128, 256, 512],
        "attention_levels": [False, False, False], "num_res_blocks": 2, "latent_channels": 3,
    },
    "text_encoder": {"max_length": 150, "dim": 1280, "depth": 32, "heads": 8, "dim_head": 64, "vocab_size": 30522},
}  # fmt: skip
"""The arguments the readers below give for XReal's release (UNet 518,166,659 parameters, autoencoder 55,312,063,
text encoder 582,087,482; its anatomy controller is an autoencoder of the same shape), as read from the shapes of
its checkpoint's keys (``tests/interop/test_convert.py`` proves the two agree): what a converted XReal is built as
where the weights themselves are not needed, e.g. timing a model of its size."""


def read_original_config(path: str | Path | None) -> dict[str, Any]:
    """The settings of a CompVis ``LatentDiffusion`` YAML config that shapes cannot tell, over :data:`XREAL_DEFAULTS`.

    Args:
        path: the original ``.yaml`` (``model.params`` with ``unet_config``, ``first_stage_config``, ...), or ``None``.
    """
    settings = dict(XREAL_DEFAULTS)
    if path is None:
        return settings
    path = Path(path)
    if not path.is_file():
        raise XRealInputError("original_config", f"no such file: {path}")
    if not has_yaml:
        raise XRealInputError("original_config", "reading a YAML config needs pip install pyyaml")
    try:
        params = yaml.safe_load(path.read_text())["model"]["params"]
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise XRealInputError("original_config", f"{path} is not a CompVis model config (model.params): {err}") from err
    unet = params.get("unet_config", {}).get("params", {})
    ddconfig = params.get("first_stage_config", {}).get("params", {}).get("ddconfig", {})
    for key in ("linear_start", "linear_end", "timesteps", "beta_schedule", "parameterization", "scale_factor"):
        settings[key] = params.get(key, settings[key])
    settings["num_heads"] = unet.get("num_heads", -1)
    settings["num_head_channels"] = unet.get("num_head_channels", -1)
    settings["image_size"] = ddconfig.get("resolution", settings["image_size"])
    if params.get("scale_by_std"):
        raise XRealInputError("original_config", "scale_by_std=True: the scale factor is in the checkpoint's buffers")
    return settings


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise XRealInputError("input", f"missing key {key!r}: not a checkpoint of the expected network")
    return tuple(state[key].shape)


def compvis_unet_arguments(state: Mapping[str, torch.Tensor], settings: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~monai_xreal.networks.CompVisDiffusionModelUNet` arguments of a CompVis ``UNetModel`` state dict
    (keys without ``model.diffusion_model.``); heads come from ``settings`` (:func:`read_original_config`)."""
    downsamplers = sorted(int(m[1]) for k in state if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.weight$", k)))
    blocks = sorted({int(m[1]) for k in state if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    num_res_blocks = downsamplers[0] - 1 if downsamplers else len(blocks) - 1
    levels = len(downsamplers) + 1
    first = [1 + level * (num_res_blocks + 1) for level in range(levels)]
    channels = [_shape(state, f"input_blocks.{k}.0.out_layers.3.weight")[0] for k in first]
    attention = [f"input_blocks.{k}.1.norm.weight" in state for k in first]
    if not any(attention):
        raise XRealInputError("input", "a UNet without spatial transformers is not a text-conditioned LDM")
    level = attention.index(True)
    prefix = f"input_blocks.{first[level]}.1.transformer_blocks."
    depth = len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})
    context_dim = _shape(state, prefix + "0.attn2.to_k.weight")[1]
    heads, head_channels = int(settings["num_heads"]), int(settings["num_head_channels"])
    if head_channels == -1 and heads < 1:
        raise XRealInputError("original_config", "the UNet config gives neither num_heads nor num_head_channels")
    arguments = {
        "spatial_dims": 2, "in_channels": _shape(state, "input_blocks.0.0.weight")[1],
        "out_channels": _shape(state, "out.2.weight")[0], "channels": channels, "attention_levels": attention,
        "num_res_blocks": num_res_blocks,
        "num_head_channels": [c // heads if head_channels == -1 else head_channels for c in channels],
        "norm_num_groups": 32, "with_conditioning": True, "transformer_num_layers": depth,
        "cross_attention_dim": context_dim,
    }  # fmt: skip
    if "label_emb.weight" in state:
        arguments["num_class_embeds"] = _shape(state, "label_emb.weight")[0]
    return arguments


def compvis_autoencoder_arguments(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """:class:`~monai_xreal.networks.CompVisAutoencoderKL` arguments of a CompVis KL-autoencoder state dict (keys
    without ``first_stage_model.``)."""
    levels = len({int(m[1]) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    num_res_blocks = len({int(m[1]) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
    if not levels or not num_res_blocks:
        raise XRealInputError("input", "no encoder.down.* keys: not a CompVis KL autoencoder")
    return {
        "spatial_dims": 2, "in_channels": _shape(state, "encoder.conv_in.weight")[1],
        "out_channels": _shape(state, "decoder.conv_out.weight")[0],
        "channels": [_shape(state, f"encoder.down.{i}.block.0.conv2.weight")[0] for i in range(levels)],
        "attention_levels": [f"encoder.down.{i}.attn.0.q.weight" in state for i in range(levels)],
        "num_res_blocks": num_res_blocks, "latent_channels": _shape(state, "post_quant_conv.weight")[0],
    }  # fmt: skip


def compvis_text_encoder_arguments(state: Mapping[str, torch.Tensor], settings: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~monai_xreal.text.BERTEmbedder` arguments of a ``cond_stage_model.*`` state dict (prefix removed)."""
    vocab_size, dim = _shape(state, "transformer.token_emb.weight")
    inner = _shape(state, "transformer.attn_layers.layers.0.1.to_q.weight")[0]
    layers = {int(m[1]) for k in state if (m := re.match(r"transformer\.attn_layers\.layers\.(\d+)\.", k))}
    dim_head = int(settings["text_dim_head"])
    return {
        "max_length": _shape(state, "transformer.pos_emb.emb.weight")[0], "dim": dim, "depth": len(layers) // 2,
        "heads": inner // dim_head, "dim_head": dim_head, "vocab_size": vocab_size,
    }  # fmt: skip
