# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The ControlNet baseline XReal compares against: one guided pass whose every step reads the masks through a
ControlNet's residuals."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from monai.networks.schedulers import Scheduler
from torch import nn

from monai_xreal.control import ControlledUNet, StepCallback, controlnet_condition
from monai_xreal.errors import XRealInputError
from monai_xreal.pipeline.base import LatentDiffusionPipeline, Progress
from monai_xreal.pipeline.conditions import PrepareConditions

__all__ = ["ControlNetPipeline"]


class ControlNetPipeline(LatentDiffusionPipeline):
    """Mask-conditioned generation through a MONAI ``ControlNet`` trained over the frozen UNet.

    The anatomy map and pathology mask become one condition image
    (:func:`~monai_xreal.control.controlnet_condition`) whose residuals steer every step of a single guided pass.
    An empty pathology mask means "no finding here" (allowed, unlike XReal's pathology stage).

    Args:
        controlnet: the ``ControlNet`` trained on :func:`~monai_xreal.control.controlnet_condition`.
        **kwargs: the LDM's parts and settings, see :class:`~monai_xreal.pipeline.base.LatentDiffusionPipeline`.
    """

    def __init__(self, autoencoder, unet, text_encoder, scheduler, controlnet: nn.Module, **kwargs) -> None:
        super().__init__(autoencoder, unet, text_encoder, scheduler, **kwargs)
        if controlnet is None:
            raise XRealInputError("control", "this bundle has no ControlNet (controlnet_def and its weights)")
        self.controlnet = controlnet.eval().requires_grad_(False)
        self.to(kwargs.get("device") or next(self.unet.parameters()).device)

    @classmethod
    def from_pipeline(cls, pipeline) -> ControlNetPipeline:
        """The baseline on an XReal pipeline's networks (shared, not copied) and its bundle's ControlNet."""
        baseline = cls.__new__(cls)
        LatentDiffusionPipeline.__init__(
            baseline, pipeline.autoencoder, pipeline.unet, pipeline.text_encoder, pipeline.scheduler,
            scale_factor=pipeline.scale_factor, anatomy_labels=pipeline.anatomy_labels,
            spatial_shape=pipeline.spatial_shape, embedding_cache_size=pipeline.embedding_cache_size,
            sampling_defaults=pipeline.sampling_defaults, image_range=pipeline.image_range,
            prompt_adapter=pipeline.prompt_adapter,
        )  # fmt: skip
        baseline._prompt_cache = pipeline._prompt_cache  # one text-encoder cache for both
        if getattr(pipeline, "controlnet", None) is None:
            raise XRealInputError("control", "this bundle has no ControlNet (controlnet_def and its weights)")
        baseline.controlnet = pipeline.controlnet
        baseline.device = pipeline.device
        return baseline

    def modules(self) -> dict[str, nn.Module | None]:
        return {**super().modules(), "controlnet": self.controlnet}

    @torch.no_grad()
    def __call__(
        self,
        anatomy=None,
        pathology=None,
        prompt: str | Sequence[str] = "",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        scheduler: str | Scheduler | None = None,
        timestep_spacing: str = "leading",
        seed: int | Sequence[int] | None = None,
        callback: StepCallback | None = None,
        progress: bool = False,
        controlnet_scale: float = 1.0,
        batched_guidance: bool = True,
        layout: str = "reader",
        **unused_knobs: float | None,
    ) -> MetaTensor:
        """Generate CXRs that follow the masks through the ControlNet (arguments as
        :meth:`XRealPipeline.__call__ <monai_xreal.pipeline.xreal.XRealPipeline.__call__>`; the anatomy knobs are
        accepted and recorded but play no part)."""
        prepare = PrepareConditions(self.spatial_shape, self.anatomy_labels, self.device, False, layout)
        data = prepare({"anatomy": anatomy, "pathology": pathology, "prompt": prompt})
        prompts = data["prompt"]
        settings = self.settings(scheduler, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                 eta=eta, **unused_knobs)  # fmt: skip
        streams = self.generators(seed, len(prompts))
        context = self.encode_prompts(prompts)
        uncond = self.encode_prompts([""] * len(prompts)) if settings.guidance_scale != 1.0 and any(prompts) else None
        unet = ControlledUNet(self.unet, self.controlnet, self.condition(data, len(prompts)), controlnet_scale)
        progress_bar = Progress(callback, settings.num_inference_steps, progress)
        try:
            images = self.reverse_pass(
                "controlnet", None, context, uncond, settings=settings, sampler=self.sampler(scheduler),
                generators=streams, callback=progress_bar, timestep_spacing=timestep_spacing,
                batched_guidance=batched_guidance, unet=unet,
            )  # fmt: skip
        finally:
            progress_bar.close()
        return self.as_output(images, anatomy)

    def condition(self, data: dict, batch: int) -> torch.Tensor:
        """The ControlNet's condition image from prepared masks (an empty one when there are none)."""
        anatomy, pathology = data["anatomy"], data["pathology"]
        if anatomy is None and pathology is None:
            anatomy = torch.zeros((batch, 1, *self.spatial_shape), device=self.device)
        return controlnet_condition(anatomy, pathology, max(self.anatomy_labels)).to(self.device)
