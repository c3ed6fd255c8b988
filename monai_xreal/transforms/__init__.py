# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI transforms for conditions (array and dictionary versions)."""

from monai_xreal.transforms.anatomy import ANATOMY_RLE_LABELS, AnatomyRLEToLabelMap, AnatomyRLEToLabelMapd
from monai_xreal.transforms.intensity import NormalizeCXRIntensity, NormalizeCXRIntensityd
from monai_xreal.transforms.labels import LabelsToVectord
from monai_xreal.transforms.latents import EncodeLatentd
from monai_xreal.transforms.masks import (
    AnatomyToControllerInput,
    AnatomyToControllerInputd,
    BoxesToMask,
    BoxesToMaskd,
    EnsureMask2D,
    EnsureMask2Dd,
    ValidateLabelMap,
    ValidateLabelMapd,
)
from monai_xreal.transforms.prompts import NO_FINDING_PROMPT, UNCONDITIONAL_PROMPT, BuildPrompt, BuildPromptd
from monai_xreal.transforms.rle import RLEToMask, RLEToMaskd

__all__ = [
    "ANATOMY_RLE_LABELS",
    "NO_FINDING_PROMPT",
    "UNCONDITIONAL_PROMPT",
    "AnatomyRLEToLabelMap",
    "AnatomyRLEToLabelMapd",
    "AnatomyToControllerInput",
    "AnatomyToControllerInputd",
    "BoxesToMask",
    "BoxesToMaskd",
    "BuildPrompt",
    "BuildPromptd",
    "EncodeLatentd",
    "EnsureMask2D",
    "EnsureMask2Dd",
    "LabelsToVectord",
    "NormalizeCXRIntensity",
    "NormalizeCXRIntensityd",
    "RLEToMask",
    "RLEToMaskd",
    "ValidateLabelMap",
    "ValidateLabelMapd",
]
