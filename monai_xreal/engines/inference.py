# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""MONAI engine glue so a bundle's ``SupervisedEvaluator`` drives ``XRealPipeline`` over a conditions datalist."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

__all__ = ["prepare_conditions_batch", "XRealInferer"]


def prepare_conditions_batch(
    batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor | None, None, tuple, dict[str, Any]]:
    """Split a collated conditions batch into the evaluator's ``(inputs, targets, args, kwargs)``.

    ``inputs`` is the anatomy label map ``(B, 1, H, W)`` (or ``None``); pathology, prompts, seeds and ids travel
    as keyword arguments to :class:`XRealInferer`.
    """

    def to_device(value):
        return None if value is None else value.to(device=device, non_blocking=non_blocking)

    extra = {
        "pathology": to_device(batchdata.get("pathology")),
        "prompt": list(batchdata["prompt"]),
        "seed": [int(s) for s in batchdata["seed"]],
        "ids": list(batchdata["id"]),
    }
    return to_device(batchdata.get("anatomy")), None, (), extra


class XRealInferer(Inferer):
    """An ``Inferer`` that runs :class:`monai_xreal.XRealPipeline` with fixed sampling settings.

    Args:
        pipeline: the pipeline; ``network`` passed at call time must be its UNet.
        sampling_kwargs: passed to every pipeline call (``num_inference_steps``, ``guidance_scale``, ...).
    """

    def __init__(self, pipeline, **sampling_kwargs) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.sampling_kwargs = sampling_kwargs

    def __call__(self, inputs: torch.Tensor | None, network: torch.nn.Module, *args, ids=None, **kwargs) -> MetaTensor:
        """Generated images ``(B, 1, H, W)`` in [0, 1] as a batched ``MetaTensor`` named after the condition ids."""
        if network is not self.pipeline.unet:
            raise ValueError("XRealInferer: the evaluator's network must be the pipeline's UNet (network_def)")
        images = self.pipeline(anatomy=inputs, **kwargs, **self.sampling_kwargs)
        out = MetaTensor(images, meta={"filename_or_obj": list(ids) if ids is not None else None})
        out.is_batch = True
        return out
