# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""SAM's prompt encoder (random Fourier position encoding of box corners and points, a small convolutional
encoder of mask prompts) and mask decoder (a two-way transformer between prompt tokens and the image embedding,
then a 4x up-scaling and one hyper-network per output mask), as LiteMedSAM uses them. Parameter names follow
``lite_medsam.pth``'s ``prompt_encoder.*`` and ``mask_decoder.*`` keys (:mod:`monai_xreal.networks.medsam`).
Inference only. Reference: Kirillov et al., Segment Anything, ICCV 2023."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from monai_xreal.networks.tiny_vit import LITE_MEDSAM_IMAGE_SIZE, LayerNorm2d

__all__ = ["SAMMaskDecoder", "SAMPromptEncoder"]


class RandomFourierPositionEncoding(nn.Module):
    """Position encoding with random (fixed, loaded) spatial frequencies: ``[sin(2 pi f), cos(2 pi f)]``,
    ``f = (2 p - 1) @ G`` for positions ``p`` in [0, 1]^2 given as ``(x, y)`` and ``G`` of shape ``(2, F)``.
    """

    def __init__(self, num_frequencies: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_frequencies))

    def encode(self, unit_coords: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` ``(x, y)`` in [0, 1] to ``(..., 2F)``."""
        phase = (2 * unit_coords - 1) @ self.positional_encoding_gaussian_matrix
        phase = 2 * math.pi * phase
        return torch.cat([phase.sin(), phase.cos()], dim=-1)

    def encode_pixels(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """``(..., 2)`` ``(x, y)`` pixel coordinates in an ``image_size = (H, W)`` image to ``(..., 2F)``."""
        height, width = image_size
        unit = torch.stack([coords[..., 0] / width, coords[..., 1] / height], dim=-1)
        return self.encode(unit.float())

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """``(2F, h, w)`` encoding of the centres of an ``(h, w)`` grid of cells spanning [0, 1]^2."""
        height, width = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        coords = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self.encode(coords).permute(2, 0, 1)


class SAMPromptEncoder(nn.Module):
    """SAM's prompt encoder: boxes and points to sparse tokens, a mask (or its absence) to a dense map.

    Args:
        embed_dim: token width (256).
        image_embedding_size: ``(h, w)`` of the image embedding (64, 64).
        input_image_size: ``(H, W)`` of the encoder's input, the frame of the prompt coordinates (256, 256).
        mask_in_chans: hidden channels of the mask-prompt encoder (16).

    ``point_embeddings`` hold, in this order, the learnt offsets of negative points, positive points, box top-left
    and box bottom-right corners; ``not_a_point_embed`` marks padding points, ``no_mask_embed`` the absence of a
    mask prompt.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (LITE_MEDSAM_IMAGE_SIZE, LITE_MEDSAM_IMAGE_SIZE),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = RandomFourierPositionEncoding(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_positional_encoding(self) -> torch.Tensor:
        """``(1, embed_dim, h, w)`` position encoding of the image embedding's cells."""
        return self.pe_layer.grid(self.image_embedding_size)[None]

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """``(B, 4)`` ``(x_min, y_min, x_max, y_max)`` in input pixels to ``(B, 2, embed_dim)`` corner tokens."""
        corners = boxes.reshape(-1, 2, 2) + 0.5  # pixel centres
        tokens = self.pe_layer.encode_pixels(corners, self.input_image_size)
        corner_offsets = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return tokens + corner_offsets

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """``(B, N, 2)`` ``(x, y)`` input pixels and ``(B, N)`` labels (1 positive, 0 negative, -1 padding) to
        ``(B, N [+ 1], embed_dim)`` tokens; ``pad`` appends one padding point (SAM does when there is no box)."""
        coords = coords + 0.5
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        tokens = self.pe_layer.encode_pixels(coords, self.input_image_size)
        labels = labels[..., None]
        tokens = torch.where(labels == -1, self.not_a_point_embed.weight, tokens)
        tokens = tokens + torch.where(labels == 0, self.point_embeddings[0].weight, 0.0)
        return tokens + torch.where(labels == 1, self.point_embeddings[1].weight, 0.0)

    def forward(
        self,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse and dense prompt embeddings.

        Args:
            boxes: ``(B, 4)`` or ``(B, 1, 4)`` ``(x_min, y_min, x_max, y_max)`` in input-image pixels.
            points: ``(B, N, 2)`` ``(x, y)`` input-image pixels and ``(B, N)`` labels, see :meth:`embed_points`.
            masks: ``(B, 1, 4h, 4w)`` mask-prompt logits.

        Returns:
            ``(B, n, embed_dim)`` sparse tokens (points first, then the two box corners) and
            ``(B, embed_dim, h, w)`` dense embedding.
        """
        given = [p for p in (points[0] if points is not None else None, boxes, masks) if p is not None]
        batch = given[0].shape[0] if given else 1
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return torch.cat(sparse, dim=1), dense


class TokenAttention(nn.Module):
    """SAM's attention with optional down-projection: queries, keys and values are projected to
    ``embedding_dim // downsample_rate`` channels, split in ``num_heads``, attended and projected back.

    ``q`` ``(B, Nq, C)``, ``k`` and ``v`` ``(B, Nk, C)`` to ``(B, Nq, C)``.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal = embedding_dim // downsample_rate
        if internal % num_heads:
            raise ValueError(f"{num_heads} heads do not divide {internal} channels")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, internal)
        self.k_proj = nn.Linear(embedding_dim, internal)
        self.v_proj = nn.Linear(embedding_dim, internal)
        self.out_proj = nn.Linear(internal, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, heads, N, C / heads)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(
            self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))


class MLPBlock(nn.Module):
    """``lin2(relu(lin1(x)))``: the two-way transformer's feed-forward block, ``(..., C)`` to ``(..., C)``."""

    def __init__(self, embedding_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """One two-way layer (post-norm residuals): token self-attention, tokens to image, token MLP, image to tokens.

    Position encodings are added to queries and keys (not values); the first layer's self-attention takes the
    tokens without their encoding and without a residual (``skip_first_layer_pe``), as in SAM.
    """

    def __init__(
        self, embedding_dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool
    ) -> None:
        super().__init__()
        self.self_attn = TokenAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = TokenAttention(embedding_dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = TokenAttention(embedding_dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens``/``token_pe`` ``(B, Nt, C)``, ``image``/``image_pe`` ``(B, h*w, C)``; returns both updated."""
        if self.skip_first_layer_pe:
            tokens = self.norm1(self.self_attn(tokens, tokens, tokens))
        else:
            q = tokens + token_pe
            tokens = self.norm1(tokens + self.self_attn(q, q, tokens))
        image_keys = image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, image_keys, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(image_keys, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """SAM's decoder transformer: ``depth`` :class:`TwoWayAttentionBlock`, a last token-to-image attention and norm.

    ``forward(image (B, C, h, w), image_pe (B, C, h, w), tokens (B, Nt, C))`` returns the tokens ``(B, Nt, C)``
    and the image ``(B, h*w, C)``.
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = TokenAttention(embedding_dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe, queries = tokens, tokens
        for layer in self.layers:
            queries, image = layer(queries, image, token_pe, image_pe)
        attended = self.final_attn_token_to_image(queries + token_pe, image + image_pe, image)
        return self.norm_final_attn(queries + attended), image


class SAMMLP(nn.Module):
    """``num_layers`` linear layers with ReLU between (``layers.0`` ... ``layers.{n-1}``): ``(..., in)`` to
    ``(..., out)``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class SAMMaskDecoder(nn.Module):
    """SAM's mask decoder: IoU and mask tokens attend with the prompt tokens to the image embedding, the image is
    up-scaled 4x and each mask is the dot product of a token's hyper-network output with every up-scaled pixel.

    Args:
        transformer_dim: token and embedding width (256).
        num_multimask_outputs: masks of the ambiguity-aware output (3); one more token gives the single mask.
        transformer_depth, transformer_heads, transformer_mlp_dim: the :class:`TwoWayTransformer`.
        iou_head_depth, iou_head_hidden_dim: the MLP predicting each mask's IoU.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        num_multimask_outputs: int = 3,
        transformer_depth: int = 2,
        transformer_heads: int = 8,
        transformer_mlp_dim: int = 2048,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(transformer_depth, transformer_dim, transformer_heads, transformer_mlp_dim)
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            SAMMLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = SAMMLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits and predicted IoU.

        Args:
            image_embeddings: ``(B, C, h, w)``, or ``(1, C, h, w)`` shared by ``B`` prompts.
            image_pe: ``(1, C, h, w)`` position encoding of the embedding's cells.
            sparse_prompt_embeddings: ``(B, n, C)`` prompt tokens.
            dense_prompt_embeddings: ``(B, C, h, w)``.
            multimask_output: return the three ambiguity-aware masks instead of the single one.

        Returns:
            ``(B, M, 4h, 4w)`` mask logits and ``(B, M)`` IoU predictions, ``M`` 1 or 3.
        """
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)
        image = image_embeddings.expand(batch, -1, -1, -1) + dense_prompt_embeddings
        _, channels, height, width = image.shape
        tokens, image = self.transformer(image, image_pe.expand(batch, -1, -1, -1), tokens)

        upscaled = self.output_upscaling(image.transpose(1, 2).reshape(batch, channels, height, width))
        mask_tokens = tokens[:, 1 : 1 + self.num_mask_tokens]
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ upscaled.flatten(2)).unflatten(-1, upscaled.shape[-2:])
        iou = self.iou_prediction_head(tokens[:, 0])

        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou[:, chosen]
