# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""TinyViT-5M as modified for LiteMedSAM: the full 256 x 256 input kept in the stem (1 x 1 convolutions), a
``(B, 256, 64, 64)`` image embedding out. Parameter names follow ``lite_medsam.pth``'s ``image_encoder.*`` keys
(:mod:`monai_xreal.networks.medsam`). Inference only. Reference: Wu et al., TinyViT, ECCV 2022."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LITE_MEDSAM_IMAGE_SIZE", "ConvBN", "LayerNorm2d", "TinyViTEncoder"]

LITE_MEDSAM_IMAGE_SIZE = 256  # the encoder's input side; boxes are given in these pixel coordinates


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
