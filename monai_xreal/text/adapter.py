# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A trainable report-embedding adapter: attention pooling of frozen token embeddings into conditioning tokens."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ReportEmbeddingAdapter"]


class ReportEmbeddingAdapter(nn.Module):
    """Learned queries attend over a frozen text encoder's token embeddings and become a fixed number of tokens.

    A report's content is spread over a few of its tokens (the finding words, their side and size) among many
    that carry nothing for the image (articles, padding). Each of ``num_tokens`` learned queries attends over the
    ``L`` token embeddings, so training the adapter with the UNet learns which tokens matter; a residual MLP then
    maps the pooled vectors into the UNet's cross-attention space. The result replaces the encoder's
    ``(B, L, D)`` context by ``(B, num_tokens, out_dim)`` for the UNet (and any ControlNet) alike.

    Args:
        embed_dim: the frozen encoder's width ``D`` (``text_encoder.embed_dim``).
        num_tokens: conditioning tokens produced per report.
        num_heads: attention heads (must divide ``embed_dim``).
        out_dim: the UNet's ``cross_attention_dim``; ``None`` keeps ``embed_dim``.
        mlp_ratio: hidden width of the residual MLP, as a multiple of ``embed_dim``.
        dropout: attention dropout while training.
    """

    def __init__(
        self,
        embed_dim: int,
        num_tokens: int = 8,
        num_heads: int = 4,
        out_dim: int | None = None,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be positive, got {num_tokens}")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        self.num_tokens = num_tokens
        self.embed_dim = embed_dim if out_dim is None else out_dim  # what the UNet's cross-attention reads
        self.queries = nn.Parameter(torch.randn(num_tokens, embed_dim) * embed_dim**-0.5)
        self.norm = nn.LayerNorm(embed_dim)
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        hidden = int(embed_dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, embed_dim))  # fmt: skip
        self.projection = nn.Identity() if out_dim in (None, embed_dim) else nn.Linear(embed_dim, out_dim)

    def _attend(self, embeddings: torch.Tensor, padding_mask: torch.Tensor | None, need_weights: bool):
        if embeddings.ndim != 3:
            raise ValueError(f"expected (B, L, D) token embeddings, got shape {tuple(embeddings.shape)}")
        keys = self.norm(embeddings)
        queries = self.queries.to(keys.dtype).expand(keys.shape[0], -1, -1)
        return self.attention(queries, keys, keys, key_padding_mask=padding_mask, need_weights=need_weights,
                              average_attn_weights=True)  # fmt: skip

    def forward(self, embeddings: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool ``(B, L, D)`` token embeddings into ``(B, num_tokens, out_dim)`` conditioning tokens.

        Args:
            embeddings: the frozen encoder's last hidden states.
            padding_mask: optional ``(B, L)`` bool, ``True`` where a token is padding and must get no attention.
        """
        pooled, _ = self._attend(embeddings, padding_mask, need_weights=False)
        return self.projection(pooled + self.mlp(pooled))

    @torch.no_grad()
    def token_weights(self, embeddings: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, num_tokens, L)`` attention of each conditioning token over the report's tokens (rows sum to 1,
        averaged over heads): which tokens the adapter has learned to read."""
        _, weights = self._attend(embeddings, padding_mask, need_weights=True)
        return weights
