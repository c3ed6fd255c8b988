# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Conditioning encoders: text (transformers, local folders only) and label vectors, and a prompt-embedding cache."""

from monai_xreal.text.adapter import ReportEmbeddingAdapter
from monai_xreal.text.bert_embedder import BERTEmbedder
from monai_xreal.text.cache import PromptEmbeddingCache
from monai_xreal.text.encoders import HFTextEncoder, LabelVectorConditioner, packaged_model_path

__all__ = [
    "BERTEmbedder",
    "HFTextEncoder",
    "LabelVectorConditioner",
    "PromptEmbeddingCache",
    "ReportEmbeddingAdapter",
    "packaged_model_path",
]
