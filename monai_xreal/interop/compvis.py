# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""CompVis latent-diffusion state dicts (XReal, Cheff, Stable Diffusion 1.x/2.x) to MONAI names, one key map each.

Every function here maps names (and reshapes where a layer type differs); nothing is loaded leniently: a key the
map does not know is an error naming it, and :func:`load_exactly` refuses missing, unexpected or mis-shaped keys.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from monai_xreal.errors import XRealInputError

__all__ = [
    "LDM_PREFIXES",
    "ldm_autoencoder_to_monai",
    "ldm_unet_to_monai",
    "load_exactly",
    "read_checkpoint",
    "strip_prefix",
]  # fmt: skip

LDM_PREFIXES = {
    "unet": "model.diffusion_model.",
    "autoencoder": "first_stage_model.",
    "text_encoder": "cond_stage_model.",
}
"""Where a CompVis ``LatentDiffusion`` checkpoint keeps each network."""


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, safely: ``.safetensors``, or ``torch.load(weights_only=True)``.

    A PyTorch Lightning checkpoint's ``state_dict`` is unwrapped. A file that needs arbitrary unpickling (a pickled
    model, Lightning hyper-parameters holding objects) is refused: re-save its ``state_dict`` where it can be trusted.

    Raises:
        XRealInputError: a missing file, one refused by the safe loader, or one without tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError("input", f"no such file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:  # memory-map zip checkpoints: a 4.6 GB backbone need not be read twice
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise XRealInputError(
            "input", f"{path} needs arbitrary unpickling, which is refused ({first}); load it where you trust it and "
            "save torch.save(checkpoint['state_dict'], 'weights.pt') or a safetensors file",
        ) from err  # fmt: skip
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        content = content["state_dict"]
    tensors = {k: v for k, v in content.items() if isinstance(v, torch.Tensor)} if isinstance(content, Mapping) else {}
    if not tensors:
        raise XRealInputError("input", f"{path} holds no tensors (not a state dict or Lightning checkpoint)")
    return tensors


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# -- UNet: ldm.modules.diffusionmodules.openaimodel.UNetModel -> monai.networks.nets.DiffusionModelUNet -------------

_RESBLOCK = (
    ("in_layers.0.", "norm1."), ("in_layers.2.", "conv1.conv."), ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2.conv."), ("skip_connection.", "skip_connection.conv."),
)  # fmt: skip
_TRANSFORMER = ((".to_out.0.", ".out_proj."), (".ff.net.0.proj.", ".ff.linear1."), (".ff.net.2.", ".ff.linear2."))
_TRANSFORMER_KEY = re.compile(
    r"transformer_blocks\.\d+\.(attn[12]\.(to_[qkv]|to_out\.0)|ff\.net\.(0\.proj|2)|norm[123])\."
)


def _renamed(sub: str, table: Sequence[tuple[str, str]], key: str) -> str:
    for old, new in table:
        if sub.startswith(old):
            return new + sub[len(old) :]
    raise XRealInputError("input", f"unknown key {key!r} for this network")


def _transformer(sub: str, key: str) -> str:
    """A ``SpatialTransformer`` key: CompVis and MONAI share its layout, apart from these names."""
    if sub.startswith(("proj_in.", "proj_out.")):
        head, rest = sub.split(".", 1)
        return f"{head}.conv.{rest}"
    if sub.startswith("norm."):
        return sub
    if not _TRANSFORMER_KEY.match(sub):
        raise XRealInputError("input", f"unknown key {key!r} in a spatial transformer")
    for old, new in _TRANSFORMER:
        sub = sub.replace(old, new)
    return sub


def ldm_unet_to_monai(state: Mapping[str, torch.Tensor], num_res_blocks: int) -> dict[str, torch.Tensor]:
    """A CompVis ``UNetModel`` state dict (keys without ``model.diffusion_model.``) in ``DiffusionModelUNet`` names.

    Input block ``k`` is level ``(k - 1) // (L + 1)``, slot ``(k - 1) % (L + 1)`` (slot ``L`` the downsampler);
    output block ``k`` is up-level ``k // (L + 1)``, slot ``k % (L + 1)``, the upsampler after its last module.
    Linear transformer projections (Stable Diffusion 2) become 1x1 convolutions.

    Args:
        state: the UNet's tensors.
        num_res_blocks: ``L``, residual blocks per down level (a single number, as CompVis' ``num_res_blocks``).

    Raises:
        XRealInputError: a key outside the map, named.
    """
    step = num_res_blocks + 1
    converted = {}
    for key, value in state.items():
        if key.startswith("input_blocks.0.0."):
            name = "conv_in.conv." + key[len("input_blocks.0.0.") :]
        elif match := re.match(r"input_blocks\.(\d+)\.(\d+)\.(.*)", key):
            index, slot, sub = int(match[1]) - 1, int(match[2]), match[3]
            level, position = divmod(index, step)
            if position == num_res_blocks:
                if not sub.startswith("op."):
                    raise XRealInputError("input", f"unknown key {key!r}: expected a downsampler")
                name = f"down_blocks.{level}.downsampler.op.conv.{sub[3:]}"
            elif slot == 0:
                name = f"down_blocks.{level}.resnets.{position}." + _renamed(sub, _RESBLOCK, key)
            else:
                name = f"down_blocks.{level}.attentions.{position}." + _transformer(sub, key)
        elif match := re.match(r"middle_block\.([012])\.(.*)", key):
            slot, sub = match.groups()
            name = {"0": "middle_block.resnet_1.", "1": "middle_block.attention.", "2": "middle_block.resnet_2."}[slot]
            name += _transformer(sub, key) if slot == "1" else _renamed(sub, _RESBLOCK, key)
        elif match := re.match(r"output_blocks\.(\d+)\.(\d+)\.(.*)", key):
            level, position = divmod(int(match[1]), step)
            slot, sub = int(match[2]), match[3]
            if slot == 0:
                name = f"up_blocks.{level}.resnets.{position}." + _renamed(sub, _RESBLOCK, key)
            elif sub.startswith("conv."):  # the upsampler: slot 1, or 2 after a transformer
                name = f"up_blocks.{level}.upsampler.postconv.{sub}"
            else:
                name = f"up_blocks.{level}.attentions.{position}." + _transformer(sub, key)
        elif key.startswith(("time_embed.", "out.0.")):
            name = key
        elif key.startswith("out.2."):
            name = "out.2.conv." + key[len("out.2.") :]
        elif key == "label_emb.weight":
            name = "class_embedding.weight"
        else:
            raise XRealInputError("input", f"unknown UNet key {key!r}")
        if name.endswith((".proj_in.conv.weight", ".proj_out.conv.weight")) and value.ndim == 2:
            value = value[:, :, None, None]
        converted[name] = value
    return converted


# -- KL autoencoder: ldm.models.autoencoder.AutoencoderKL -> monai_xreal.networks.CompVisAutoencoderKL ---------------

_AE_RESBLOCK = (("norm1.", "norm1."), ("conv1.", "conv1.conv."), ("norm2.", "norm2."), ("conv2.", "conv2.conv."),
                ("nin_shortcut.", "nin_shortcut.conv."))  # fmt: skip
_AE_ATTENTION = (("norm.", "norm."), ("q.", "attn.to_q."), ("k.", "attn.to_k."), ("v.", "attn.to_v."),
                 ("proj_out.", "attn.out_proj."))  # fmt: skip


def _autoencoder_block_indices(num_res_blocks: int, attention_levels: Sequence[bool]) -> dict[str, dict[str, int]]:
    """CompVis module path -> index in MONAI's ``encoder.blocks`` / ``decoder.blocks`` (both built as sequences)."""
    levels = len(attention_levels)
    encoder, index = {}, 1
    for level in range(levels):
        for slot in range(num_res_blocks):
            encoder[f"down.{level}.block.{slot}"] = index
            index += 1
            if attention_levels[level]:
                encoder[f"down.{level}.attn.{slot}"] = index
                index += 1
        if level != levels - 1:
            encoder[f"down.{level}.downsample"] = index
            index += 1
    encoder.update({"mid.block_1": index, "mid.attn_1": index + 1, "mid.block_2": index + 2, "norm_out": index + 3,
                    "conv_out": index + 4})  # fmt: skip
    decoder, index = {"mid.block_1": 1, "mid.attn_1": 2, "mid.block_2": 3}, 4
    for level in reversed(range(levels)):  # CompVis numbers the decoder's levels from the top; MONAI runs them upwards
        for slot in range(num_res_blocks + 1):
            decoder[f"up.{level}.block.{slot}"] = index
            index += 1
            if attention_levels[level]:
                decoder[f"up.{level}.attn.{slot}"] = index
                index += 1
        if level != 0:
            decoder[f"up.{level}.upsample"] = index
            index += 1
    decoder.update({"norm_out": index, "conv_out": index + 1})
    return {"encoder": encoder, "decoder": decoder}


def ldm_autoencoder_to_monai(
    state: Mapping[str, torch.Tensor], num_res_blocks: int, attention_levels: Sequence[bool]
) -> dict[str, torch.Tensor]:
    """A CompVis KL-autoencoder state dict (keys without ``first_stage_model.``) in
    :class:`~monai_xreal.networks.CompVisAutoencoderKL` names.

    ``quant_conv`` splits into its mean rows (``quant_conv_mu``) and log-variance rows (``quant_conv_log_sigma``);
    the 1x1 attention convolutions become linear layers. The training loss (``loss.*``: LPIPS, discriminator) is not
    part of the network and is left out.

    Args:
        state: the autoencoder's tensors.
        num_res_blocks: CompVis' ``num_res_blocks`` (the decoder has one more per level).
        attention_levels: per level, whether it has attention (CompVis' ``attn_resolutions``).

    Raises:
        XRealInputError: a key outside the map, named.
    """
    tables = _autoencoder_block_indices(num_res_blocks, attention_levels)
    kept = {k: v for k, v in state.items() if not k.startswith("loss.")}
    return autoencoder_keys_to_monai(kept, tables, _compvis_autoencoder_block)


def _compvis_autoencoder_block(path: str, sub: str, key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    if path == "norm_out":
        return sub, value
    if path == "conv_out" or path.endswith("downsample"):
        return "conv." + sub, value  # conv.weight -> conv.conv.weight for the downsampler
    if path.endswith("upsample"):
        return "post" + sub.replace("conv.", "conv.conv.", 1), value
    if ".attn" in path or path == "mid.attn_1":
        return _renamed(sub, _AE_ATTENTION, key), value[:, :, 0, 0] if value.ndim == 4 else value
    return _renamed(sub, _AE_RESBLOCK, key), value


def autoencoder_keys_to_monai(
    state: Mapping[str, torch.Tensor],
    tables: Mapping[str, Mapping[str, int]],
    block: Callable[[str, str, str, torch.Tensor], tuple[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """The walk every KL-autoencoder format shares: its ``quant_conv`` split into mean and log-variance rows,
    ``post_quant_conv``, each part's ``conv_in``, then each block found by the longest module path in ``tables``
    (``{"encoder": {path: index in MONAI's blocks}, "decoder": {...}}``) and renamed by ``block(path, rest of the key,
    key, tensor)``, which returns the name under ``<part>.blocks.<index>.`` and the (reshaped) tensor."""
    converted = {}
    for key, value in state.items():
        if key.startswith("quant_conv."):
            half, rest = value.shape[0] // 2, key[len("quant_conv.") :]
            converted[f"quant_conv_mu.conv.{rest}"] = value[:half]
            converted[f"quant_conv_log_sigma.conv.{rest}"] = value[half:]
            continue
        if key.startswith("post_quant_conv."):
            converted["post_quant_conv.conv." + key[len("post_quant_conv.") :]] = value
            continue
        part, _, rest = key.partition(".")
        if part not in tables:
            raise XRealInputError("input", f"unknown autoencoder key {key!r}")
        if rest.startswith("conv_in."):
            converted[f"{part}.blocks.0.conv.{rest[len('conv_in.') :]}"] = value
            continue
        path = next((p for p in sorted(tables[part], key=len, reverse=True) if rest.startswith(p + ".")), None)
        if path is None:
            raise XRealInputError("input", f"unknown autoencoder key {key!r}")
        name, value = block(path, rest[len(path) + 1 :], key, value)
        converted[f"{part}.blocks.{tables[part][path]}.{name}"] = value
    return converted


# -- loading ----------------------------------------------------------------------------------------------------------


def load_exactly(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` into ``module`` only if every key matches in name and shape; the error names the keys.

    Args:
        module: the MONAI network.
        state: converted tensors.
        source: what the tensors came from, for the message (a file, a checkpoint prefix).
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in sorted(set(expected) & set(state)) if tuple(expected[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        k = mismatched[0]
        problems.append(f"{len(mismatched)} of another shape (e.g. {k}: {tuple(state[k].shape)} for "
                        f"{tuple(expected[k].shape)})")  # fmt: skip
    if problems:
        raise XRealInputError("input", f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=True)
    return module
