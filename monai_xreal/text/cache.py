# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Prompt embeddings computed once: generation reuses a handful of prompts, and so does training on label prompts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PromptEmbeddingCache"]


class PromptEmbeddingCache:
    """A frozen text encoder behind a least-recently-used cache of prompt embeddings.

    ``cache(prompts, device)`` returns ``(B, L, D)`` embeddings of ``B`` prompts; each distinct prompt not in the
    cache goes through the encoder once, in one batch with the others missing.

    Args:
        text_encoder: prompts ``list[str]`` to ``(N, L, D)`` embeddings (not modified here).
        size: how many prompts to keep.
    """

    def __init__(self, text_encoder: nn.Module, size: int = 128) -> None:
        self.text_encoder = text_encoder
        self.size = size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            for prompt, embedding in zip(missing, self.text_encoder(missing), strict=True):
                self._cache[prompt] = embedding.detach().to(device)
        for prompt in prompts:
            self._cache.move_to_end(prompt)
        result = torch.stack([self._cache[p] for p in prompts]).to(device)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return result

    def __contains__(self, prompt: str) -> bool:
        return prompt in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def prompts(self) -> list[str]:
        """The cached prompts, least recently used first."""
        return list(self._cache)

    def clear(self) -> None:
        """Forget every embedding (e.g. after the encoder moved to another device)."""
        self._cache.clear()
