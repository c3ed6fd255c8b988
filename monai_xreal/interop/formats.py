# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The weight formats ``convert`` reads (pure data: ``monai-xreal convert --help`` lists them)."""

__all__ = ["FORMATS"]

FORMATS = ("compvis", "diffusers", "model-zoo")
