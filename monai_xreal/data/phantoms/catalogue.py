# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What the phantom generator draws and at which sizes (pure data: ``monai-xreal phantoms --help`` lists it)."""

__all__ = ["MAX_SIZE", "MIN_SIZE", "PHANTOM_FINDINGS"]

PHANTOM_FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation", "Nodule")
MIN_SIZE, MAX_SIZE = 64, 512
