# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What the bundles' ignite engines need beyond MONAI."""

from monai_xreal.engines.autoencoder import AutoencoderKLTrainer, AutoencoderPrepareBatch, kl_divergence
from monai_xreal.engines.checkpoints import latest_checkpoint
from monai_xreal.engines.diffusion import (
    ControlNetPrepareBatch,
    ControlNetTrainingInferer,
    LatentDiffusionPrepareBatch,
    controlnet_from_unet,
    latent_dataset,
    latent_scale_factor,
)
from monai_xreal.engines.distributed import destroy_distributed, handlers_for_rank, init_distributed, runs_on_every_rank
from monai_xreal.engines.ema import AccumulatedEMAHandler, optimizer_stepped
from monai_xreal.engines.finetune import (
    TRAINABLE,
    MergedWeights,
    TextConditionedUNet,
    TextEncoderSaver,
    finetune_unet,
    text_encoder_of,
    trainable_parameters,
    unet_of,
)
from monai_xreal.engines.inference import XRealInferer, prepare_conditions_batch
from monai_xreal.engines.noise_filter import LatentNoiseFilter, SampleState, SampleWeightedLoss
from monai_xreal.engines.previews import AutoencoderPreview, ImageGridSaver, PipelinePreview, first_items

__all__ = [
    "AccumulatedEMAHandler",
    "AutoencoderKLTrainer",
    "AutoencoderPrepareBatch",
    "AutoencoderPreview",
    "ControlNetPrepareBatch",
    "ControlNetTrainingInferer",
    "ImageGridSaver",
    "LatentDiffusionPrepareBatch",
    "LatentNoiseFilter",
    "MergedWeights",
    "PipelinePreview",
    "SampleState",
    "SampleWeightedLoss",
    "TRAINABLE",
    "TextConditionedUNet",
    "TextEncoderSaver",
    "XRealInferer",
    "controlnet_from_unet",
    "destroy_distributed",
    "finetune_unet",
    "first_items",
    "handlers_for_rank",
    "init_distributed",
    "kl_divergence",
    "latent_dataset",
    "latent_scale_factor",
    "latest_checkpoint",
    "optimizer_stepped",
    "prepare_conditions_batch",
    "runs_on_every_rank",
    "text_encoder_of",
    "trainable_parameters",
    "unet_of",
]
