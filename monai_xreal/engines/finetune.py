# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Fine-tuning a pretrained (converted) diffusion UNet: which parameters train, and the plain weights it leaves.

``configs/finetune.json`` (layered on ``train_diffusion.json``) starts from the bundle's own UNet weights, keeps its
scale factor, prediction type and image range, and trains one of:

- ``"all"``: every UNet parameter (the text encoder stays frozen, its embeddings cached per prompt, unless given);
- ``"attention"``: only the UNet's spatial transformers (self- and cross-attention, their feed-forward and norms), the
  layers through which the text steers the image;
- ``"lora"``: low-rank adapters (``peft``) on the attention projections ``to_q``, ``to_k``, ``to_v``, ``out_proj``;
  the base weights stay frozen and :class:`MergedWeights` folds the adapters back in, so the bundle's ``model.pt``
  keeps the UNet's own keys and loads without ``peft``.

With a text encoder given, it trains with the UNet (:class:`TextConditionedUNet`: the batches carry tokens, the
encoder runs in the forward pass) and :class:`TextEncoderSaver` writes it as a transformers folder.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
from monai.networks.nets.diffusion_model_unet import SpatialTransformer
from monai.utils import optional_import
from torch import nn
from torch.utils.checkpoint import checkpoint

from monai_xreal.errors import XRealInputError

__all__ = [
    "LORA_TARGETS",
    "TRAINABLE",
    "MergedWeights",
    "TextConditionedUNet",
    "TextEncoderSaver",
    "checkpoint_unet_blocks",
    "finetune_unet",
    "text_encoder_of",
    "trainable_parameters",
    "unet_of",
]

TRAINABLE = ("all", "attention", "lora")
# the attention projections of MONAI's SABlock and CrossAttentionBlock inside a DiffusionModelUNet's transformers
LORA_TARGETS = r".*\.attn[12]\.(to_q|to_k|to_v|out_proj)"


def finetune_unet(
    unet: nn.Module,
    trainable: str = "all",
    lora_rank: int = 8,
    lora_alpha: float | None = None,
    gradient_checkpointing: bool = False,
    text_encoder: nn.Module | None = None,
) -> nn.Module:
    """``unet`` (with its pretrained weights loaded) set up so that only the chosen parameters train.

    Args:
        unet: a MONAI ``DiffusionModelUNet`` (or the converters' ``CompVisDiffusionModelUNet``).
        trainable: ``"all"``, ``"attention"`` or ``"lora"`` (see the module docstring).
        lora_rank, lora_alpha: the adapters' rank and scale (``alpha / rank`` multiplies their update;
            ``None``: ``alpha = rank``). Read only with ``"lora"``.
        gradient_checkpointing: recompute each down, middle and up block's activations in the backward pass
            instead of keeping them (:func:`checkpoint_unet_blocks`): less memory, about a third more time.
        text_encoder: also fine-tune this encoder (every parameter) with the UNet; ``None`` keeps it frozen.

    Returns:
        ``unet`` itself (``"all"``, ``"attention"``) or with LoRA layers injected in place (``"lora"``).

    Raises:
        XRealInputError: an unknown ``trainable``, a UNet without attention layers to train (say, a text-free
            UNet), a rank below 1, or ``"lora"`` without the ``peft`` package.
    """
    if trainable not in TRAINABLE:
        raise XRealInputError("trainable", f"must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
    transformers = [m for m in unet.modules() if isinstance(m, SpatialTransformer)]
    if trainable != "all" and not transformers:
        raise XRealInputError("trainable", f"{type(unet).__name__} has no attention layers to fine-tune "
                              f"(trainable={trainable!r} needs a text-conditioned UNet); use trainable='all'")  # fmt: skip
    if gradient_checkpointing:
        checkpoint_unet_blocks(unet)
    if text_encoder is not None:
        return TextConditionedUNet(finetune_unet(unet, trainable, lora_rank, lora_alpha), text_encoder)
    if trainable == "all":
        return unet.requires_grad_(True)
    if trainable == "attention":
        unet.requires_grad_(False)
        for block in transformers:
            block.requires_grad_(True)
        return unet
    if int(lora_rank) < 1:
        raise XRealInputError("lora_rank", f"must be at least 1, got {lora_rank}")
    peft, has_peft = optional_import("peft")
    if not has_peft:
        raise XRealInputError("trainable", "trainable='lora' needs the peft package (pip install peft)")
    config = peft.LoraConfig(r=int(lora_rank), lora_alpha=float(lora_alpha or lora_rank), target_modules=LORA_TARGETS)
    return peft.inject_adapter_in_model(config, unet)


class TextConditionedUNet(nn.Module):
    """A UNet and its text encoder trained together: ``forward(x, timesteps, context)`` takes the encoder's tokens
    (``(B, 2, L)``, :meth:`monai_xreal.text.HFTextEncoder.tokenize`) as ``context`` and encodes them with gradients.

    Args:
        unet: the diffusion UNet.
        text_encoder: a text encoder with ``tokenize`` / ``encode`` (:class:`~monai_xreal.text.HFTextEncoder`).

    Raises:
        XRealInputError: an encoder that cannot be trained this way.
    """

    def __init__(self, unet: nn.Module, text_encoder: nn.Module) -> None:
        super().__init__()
        if not (hasattr(text_encoder, "tokenize") and hasattr(text_encoder, "encode")):
            raise XRealInputError("train_text_encoder", f"{type(text_encoder).__name__} cannot be fine-tuned: only a "
                                  "transformers encoder (HFTextEncoder) is")  # fmt: skip
        self.unet, self.text_encoder = unet, text_encoder.requires_grad_(True)
        # BERT's pooler is not on the path (the UNet reads the last hidden states): frozen, so that every trained
        # parameter gets a gradient (DistributedDataParallel requires it)
        pooler = getattr(getattr(text_encoder, "model", None), "pooler", None)
        if pooler is not None:
            pooler.requires_grad_(False)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.unet(x, timesteps=timesteps, context=self.text_encoder.encode(context), **kwargs)


def unet_of(network: nn.Module) -> nn.Module:
    """The UNet of a fine-tuned network (:class:`TextConditionedUNet`'s, or the network itself)."""
    network = getattr(network, "module", network)  # DistributedDataParallel
    return network.unet if isinstance(network, TextConditionedUNet) else network


def text_encoder_of(network: nn.Module, default: nn.Module) -> nn.Module:
    """The text encoder trained with ``network``, or ``default`` (the frozen one) when none is."""
    network = getattr(network, "module", network)
    return network.text_encoder if isinstance(network, TextConditionedUNet) else default


class TextEncoderSaver:
    """Handler: when training completes, write the (EMA) network's trained text encoder to
    ``<output_dir>/text_encoder`` (:meth:`~monai_xreal.text.HFTextEncoder.save_pretrained`); nothing when the encoder
    was not trained. Rank 0 only under DDP (a checkpoint handler)."""

    def __init__(self, network: nn.Module, output_dir) -> None:
        self.network, self.output_dir = network, output_dir

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine=None):
        network = getattr(self.network, "module", self.network)
        if isinstance(network, TextConditionedUNet):
            return network.text_encoder.save_pretrained(Path(self.output_dir) / "text_encoder")
        return None


class _CheckpointedForward:
    """A block's ``forward`` run under ``torch.utils.checkpoint`` while training with gradients (a callable object,
    not a closure, so that ``copy.deepcopy`` of the network, as EMA makes, rebinds it to the copy)."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, *args, **kwargs):
        block = self.forward.__self__
        if block.training and torch.is_grad_enabled():
            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


def checkpoint_unet_blocks(unet: nn.Module) -> nn.Module:
    """Activation checkpointing for a MONAI ``DiffusionModelUNet`` (which has no option for it; its
    ``AutoencoderKL`` has ``use_checkpoint``): each of ``down_blocks``, ``middle_block`` and ``up_blocks`` recomputes
    its activations in the backward pass. Outputs, gradients and the state dict are unchanged; returns ``unet``."""
    blocks = [*getattr(unet, "down_blocks", []), getattr(unet, "middle_block", None), *getattr(unet, "up_blocks", [])]
    blocks = [b for b in blocks if b is not None]
    if not blocks:
        raise XRealInputError("gradient_checkpointing", f"{type(unet).__name__} has no UNet blocks to checkpoint")
    for block in blocks:
        if not isinstance(block.forward, _CheckpointedForward):
            block.forward = _CheckpointedForward(block.forward)
    return unet


def trainable_parameters(network: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser gets: those that require gradients."""
    return [p for p in network.parameters() if p.requires_grad]


class MergedWeights:
    """The plain UNet state dict of a fine-tuned network, computed when it is saved (a ``CheckpointSaver``'s
    ``save_dict`` entry): LoRA adapters are merged into a copy of their base layers and their keys dropped; any
    other network's state dict is passed through.

    Args:
        network: the (EMA) network being fine-tuned.
    """

    _BASE = re.compile(r"\.base_layer(?=\.)")

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def state_dict(self) -> dict[str, torch.Tensor]:
        network = unet_of(self.network)
        if not any(".lora_" in key for key in network.state_dict()):
            return network.state_dict()
        merged = copy.deepcopy(network)
        for module in merged.modules():
            if hasattr(module, "merge") and hasattr(module, "base_layer"):
                module.merge()
        return {self._BASE.sub("", k): v for k, v in merged.state_dict().items() if ".lora_" not in k}
