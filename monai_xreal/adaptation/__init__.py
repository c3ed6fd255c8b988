# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Adapting a pretrained generator bundle to a user's radiographs (``monai-xreal finetune``)."""

from monai_xreal.adaptation.finetune import FINETUNE_CONFIGS, FinetuneRequest, check_finetune_request, finetune_bundle

__all__ = ["FINETUNE_CONFIGS", "FinetuneRequest", "check_finetune_request", "finetune_bundle"]
