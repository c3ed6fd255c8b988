# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A diffusion UNet trained together with the module that shapes its cross-attention context."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AdaptedContextUNet"]


class AdaptedContextUNet(nn.Module):
    """``unet(x, timesteps, context=adapter(context))``: a UNet and its context adapter as one trainable network.

    Training wraps the two so that MONAI's ``SupervisedTrainer``, ``DiffusionInferer``, ignite's ``EMAHandler``
    and the checkpoint handlers treat them as one network; the two are saved to separate weight files
    (``unet`` as ``model.pt``, ``adapter`` as ``model_report_adapter.pt``) so that inference keeps the frozen
    text encoder, the adapter and the UNet apart (``XRealPipeline(prompt_adapter=...)``).

    Args:
        unet: a ``DiffusionModelUNet`` (or anything with its ``forward`` signature).
        adapter: ``(B, L, D)`` frozen token embeddings to ``(B, N, cross_attention_dim)``, e.g.
            :class:`monai_xreal.text.ReportEmbeddingAdapter`.
        freeze_unet: train the adapter only: the UNet gets no gradients and stays in eval mode (XReal's frozen
            backbone: controllers trained against the UNet stay valid).
    """

    def __init__(self, unet: nn.Module, adapter: nn.Module, freeze_unet: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.adapter = adapter
        self.freeze_unet = bool(freeze_unet)
        if self.freeze_unet:
            self.unet.requires_grad_(False)

    def train(self, mode: bool = True) -> AdaptedContextUNet:
        super().train(mode)
        if self.freeze_unet:
            self.unet.eval()
        return self

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        down_block_additional_residuals: tuple[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x``: ``(B, C, h, w)`` noisy latents; ``context``: ``(B, L, D)`` frozen token embeddings."""
        if context is not None:
            context = self.adapter(context)
        return self.unet(x, timesteps, context, class_labels, down_block_additional_residuals,
                         mid_block_additional_residual)  # fmt: skip
