# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Conditioning: text encoders (transformers, local folders only) and label vectors, a prompt-embedding cache,
report sections and demographics.

Names are imported when first used, so that the light modules (``demographics``, ``reports``) load without torch.
"""

from __future__ import annotations

from monai_xreal.lazy import lazy_attributes

_EXPORTS = {
    "BERTEmbedder": "monai_xreal.text.bert_embedder",
    "Demographics": "monai_xreal.text.demographics",
    "HFTextEncoder": "monai_xreal.text.encoders",
    "LabelVectorConditioner": "monai_xreal.text.encoders",
    "PromptEmbeddingCache": "monai_xreal.text.cache",
    "ReportEmbeddingAdapter": "monai_xreal.text.adapter",
    "packaged_model_path": "monai_xreal.text.encoders",
    "with_demographics": "monai_xreal.text.demographics",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_attributes(__name__, _EXPORTS)
