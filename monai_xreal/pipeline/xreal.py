# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""XRealPipeline: anatomy- and pathology-controlled CXR generation on a frozen latent diffusion model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.data import MetaTensor
from monai.networks.schedulers import Scheduler
from torch import nn

from monai_xreal.control import (
    KnownRegion,
    StepCallback,
    anatomy_keep_weights,
    feather_inside,
    feathered_composite,
    pathology_keep_weights,
)
from monai_xreal.errors import XRealInputError
from monai_xreal.pipeline.base import LatentDiffusionPipeline, Progress
from monai_xreal.pipeline.codec import to_channels, to_gray
from monai_xreal.pipeline.conditions import PrepareConditions
from monai_xreal.pipeline.editing import PrepareEdit, SquareGrid
from monai_xreal.pipeline.settings import XREAL_SAMPLING, SamplingSettings
from monai_xreal.transforms import AnatomyToControllerInput

__all__ = ["XREAL_SAMPLING", "XRealPipeline"]


class XRealPipeline(LatentDiffusionPipeline):
    """Controllable CXR generation with XReal's two controllers over a frozen text-conditioned LDM.

    Stage 1 (anatomy): the anatomy controller turns the label map into a coarse X-ray, whose latent is held in the
    sample (weight 1 in organs, ``anatomy_soft_value`` elsewhere) during the first ``anatomy_step_fraction`` of the
    steps. Stage 2 (pathology): the stage-1 image is re-encoded and held outside the pathology mask at every step
    while the model paints inside it, guided by the prompt. XReal's prompt rule: when a pathology stage follows,
    the anatomy stage samples on the empty prompt without guidance; otherwise it carries the prompt.

    Images are ``(B, 1, H, W)`` floats in [0, 1], spatial axes in MONAI's reader order (what ``LoadImage`` returns
    and ``SaveImage`` writes back; ``PIL.Image`` masks are brought to it, see :mod:`~monai_xreal.pipeline.conditions`).

    Args:
        anatomy_controller: the mask-to-image ``AutoencoderKL``; ``None`` disables anatomy control.
        controlnet: a MONAI ``ControlNet`` trained over ``unet``, for the baseline
            (:class:`~monai_xreal.pipeline.controlnet.ControlNetPipeline`, or ``control="controlnet"``).
        families: the model family of each latent-space network (``{"autoencoder": "xreal:3f2a...", ...}``); an
            anatomy controller from another family than the autoencoder is refused.
        **kwargs: the LDM's parts and settings, see :class:`~monai_xreal.pipeline.base.LatentDiffusionPipeline`.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        unet: nn.Module,
        text_encoder: nn.Module,
        scheduler: Scheduler,
        anatomy_controller: nn.Module | None = None,
        controlnet: nn.Module | None = None,
        families: Mapping[str, str] | None = None,
        **kwargs,
    ) -> None:
        _check_family(anatomy_controller, families or {})
        super().__init__(autoencoder, unet, text_encoder, scheduler, **kwargs)
        self.families = dict(families or {})
        self.anatomy_controller = (
            None if anatomy_controller is None else anatomy_controller.eval().requires_grad_(False)
        )
        self.controlnet = None if controlnet is None else controlnet.eval().requires_grad_(False)
        self.to(kwargs.get("device") or next(self.unet.parameters()).device)

    def modules(self) -> dict[str, nn.Module | None]:
        return {**super().modules(), "anatomy_controller": self.anatomy_controller, "controlnet": self.controlnet}

    # -- generation ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        anatomy=None,
        pathology=None,
        prompt: str | Sequence[str] = "",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        anatomy_soft_value: float | None = None,
        anatomy_step_fraction: float | None = None,
        eta: float | None = None,
        blending: str | None = None,
        anatomy_num_inference_steps: int | None = None,
        pathology_feather: float | None = None,
        scheduler: str | Scheduler | None = None,
        timestep_spacing: str = "leading",
        seed: int | Sequence[int] | None = None,
        callback: StepCallback | None = None,
        progress: bool = False,
        control: str = "xreal",
        controlnet_scale: float = 1.0,
        batched_guidance: bool = True,
        layout: str = "reader",
    ) -> MetaTensor:
        """Generate CXRs that follow an anatomy label map, a pathology region and a prompt.

        Args:
            anatomy: ``(B, 1, H, W)``, ``(1, H, W)`` or ``(H, W)`` integer label map in the bundle's label set (a
                tensor, array or ``PIL.Image``); ``None`` for generation without anatomy control.
            pathology: a binary mask of the same shape (1 = paint the finding here), or ``B`` ``(N, 4)`` box arrays
                in the anatomy map's pixel grid (see ``BoxesToMask``); ``None`` for no pathology stage, in which
                case the prompt conditions the anatomy stage instead.
            prompt: one prompt for the batch, or ``B`` prompts.
            num_inference_steps, guidance_scale, anatomy_soft_value, anatomy_step_fraction, eta, blending,
                anatomy_num_inference_steps, pathology_feather: the sampling knobs
                (:data:`~monai_xreal.pipeline.settings.KNOBS`); each left ``None`` takes the bundle's default.
            scheduler: ``"ddim"``, ``"ddpm"``, ``"pndm"``, a MONAI scheduler object, or ``None`` for the bundle's.
            timestep_spacing: ``"leading"`` (CompVis / XReal grid) or ``"scheduler"`` (the scheduler's own).
            seed: an int (sample ``i`` uses ``seed + i``), one int per sample, or ``None`` for fresh seeds.
            callback: ``callback(stage, step_index, timestep, latents)`` after each blending.
            progress: show a progress bar over the steps.
            control: ``"xreal"`` (the two controllers) or ``"controlnet"`` (the baseline,
                :class:`~monai_xreal.pipeline.controlnet.ControlNetPipeline`, on the same networks).
            controlnet_scale: weight of the ControlNet's residuals (``"controlnet"`` only).
            batched_guidance: guidance's two branches as one UNet call on ``2B`` samples (default) or two calls
                on ``B`` (XReal's release); the images are the same.
            layout: axis order of array masks: ``"reader"`` (MONAI's, default) or ``"rows"`` (numpy / PIL rows).

        Returns:
            ``(B, 1, H, W)`` ``MetaTensor`` of images in [0, 1] at the model's ``spatial_shape``, its affine placing
            the model grid over the anatomy map's (when that was a ``MetaTensor``).
        """
        knobs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "eta": eta,
                 "anatomy_soft_value": anatomy_soft_value, "anatomy_step_fraction": anatomy_step_fraction,
                 "blending": blending, "anatomy_num_inference_steps": anatomy_num_inference_steps,
                 "pathology_feather": pathology_feather}  # fmt: skip
        if control == "controlnet":
            from monai_xreal.pipeline.controlnet import ControlNetPipeline

            return ControlNetPipeline.from_pipeline(self)(
                anatomy, pathology, prompt, scheduler=scheduler, timestep_spacing=timestep_spacing, seed=seed,
                callback=callback, progress=progress, controlnet_scale=controlnet_scale,
                batched_guidance=batched_guidance, layout=layout, **knobs,
            )  # fmt: skip
        if control != "xreal":
            raise XRealInputError("control", f"{control!r} is not 'xreal' or 'controlnet'")
        conditions = self.prepare_conditions(anatomy, pathology, prompt, layout=layout, as_dict=True)
        settings = self.settings(scheduler, **knobs)
        anatomy_map, region, prompts = conditions["anatomy"], conditions["pathology"], conditions["prompt"]
        streams = self.generators(seed, len(prompts))
        sampler = self.sampler(scheduler)
        context, empty, uncond = self.prompt_contexts(prompts, settings.guidance_scale)
        run = dict(settings=settings, sampler=sampler, generators=streams, timestep_spacing=timestep_spacing,
                   batched_guidance=batched_guidance)  # fmt: skip
        steps = (
            settings.anatomy_steps + settings.num_inference_steps
            if region is not None
            else settings.num_inference_steps
        )
        progress_bar = Progress(callback, steps, progress)
        try:
            # XReal's prompt rule: the anatomy stage samples on the empty prompt when a pathology stage follows
            if region is not None:
                stage_one = {**run, "settings": settings.for_anatomy_stage()}
                images = self.anatomy_stage(anatomy_map, empty, None, callback=progress_bar, **stage_one)
                images = self.pathology_stage(images, region, context, uncond, callback=progress_bar, **run)
            else:
                images = self.anatomy_stage(anatomy_map, context, uncond, callback=progress_bar, **run)
        finally:
            progress_bar.close()
        return self.as_output(images, anatomy)

    @torch.no_grad()
    def edit(
        self,
        image,
        region,
        prompt: str | Sequence[str] = "",
        keep=None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        eta: float | None = None,
        blending: str | None = None,
        pathology_feather: float | None = None,
        scheduler: str | Scheduler | None = None,
        timestep_spacing: str = "leading",
        seed: int | Sequence[int] | None = None,
        callback: StepCallback | None = None,
        progress: bool = False,
        batched_guidance: bool = True,
        layout: str = "reader",
    ) -> MetaTensor:
        """Repaint ``region`` of radiographs with the pathology stage; every pixel outside it is returned unchanged.

        The images are brought to the model grid (:class:`~monai_xreal.pipeline.editing.SquareGrid`: padded to a
        square, resized), the pathology stage repaints the region guided by the prompt while holding the rest, and
        the change it made is resized back and added inside the region with a feather that lies inside it
        (:func:`~monai_xreal.control.blending.feather_inside`, ``pathology_feather`` model pixels wide). Outside the
        region the result *is* the input (``torch.where``): edits of a file are bit-exact there after the file's
        intensity mapping (:mod:`monai_xreal.io.radiograph`).

        Args:
            image: ``(B, 1, H, W)``, ``(1, H, W)`` or ``(H, W)`` radiographs in [0, 1], bone bright, any size.
            region: a binary mask of the image's shape (1 = may change), or ``B`` ``(N, 4)`` box arrays in the
                image's pixel grid.
            prompt: the finding to paint (``"Pleural Effusion"``), ``"No Finding"`` to remove one, or ``B`` texts.
            keep: an optional mask of the image's shape that must not change even inside ``region``.
            num_inference_steps, guidance_scale, eta, blending, pathology_feather: the sampling knobs
                (:data:`~monai_xreal.pipeline.settings.KNOBS`); ``None`` takes the bundle's default.
            scheduler, timestep_spacing, seed, callback, progress, batched_guidance, layout: as in
                :meth:`__call__`.

        Returns:
            ``(B, 1, H, W)`` ``MetaTensor`` in [0, 1] at the input's size (with its meta when it was a
            ``MetaTensor``).
        """
        request = PrepareEdit(self.device, layout)({"image": image, "region": region, "keep": keep, "prompt": prompt})
        images, inside, prompts = request["image"], request["region"], request["prompt"]
        knobs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "eta": eta,
                 "blending": blending, "pathology_feather": pathology_feather}  # fmt: skip
        settings = self.settings(scheduler, **knobs)
        grid = SquareGrid(images.shape[2:], self.spatial_shape)
        on_grid = grid.to_grid(images).clamp(0, 1)
        streams = self.generators(seed, len(prompts))
        context, _, uncond = self.prompt_contexts(prompts, settings.guidance_scale)
        progress_bar = Progress(callback, settings.num_inference_steps, progress)
        try:
            painted = self.pathology_stage(
                on_grid, grid.mask_to_grid(inside), context, uncond, settings=settings, sampler=self.sampler(scheduler),
                generators=streams, callback=progress_bar, timestep_spacing=timestep_spacing,
                batched_guidance=batched_guidance,
            )  # fmt: skip
        finally:
            progress_bar.close()
        weight = feather_inside(inside, settings.pathology_feather * grid.scale)
        edited = (images + weight * grid.from_grid(painted - on_grid)).clamp(0, 1)
        edited = torch.where(inside > 0, edited, images)
        meta = dict(image.meta) if isinstance(image, MetaTensor) else {}
        return MetaTensor(edited, meta=meta)

    def prompt_contexts(
        self, prompts: Sequence[str], guidance_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(context, empty, uncond)``: the prompts' context, the empty prompt's, and the unconditional branch of
        guidance (``None`` when there is nothing to guide: scale 1 or no prompt)."""
        context = self.encode_prompts(prompts)
        empty = self.encode_prompts([""] * len(prompts))
        uncond = empty if guidance_scale != 1.0 and any(prompts) else None
        return context, empty, uncond

    def anatomy_stage(
        self, anatomy: torch.Tensor | None, context: torch.Tensor, uncond: torch.Tensor | None, *,
        settings: SamplingSettings, generators: Sequence[torch.Generator], **run,
    ) -> torch.Tensor:  # fmt: skip
        """Stage 1: sample while holding the anatomy controller's latent in the organs (weight 1) and elsewhere
        (``anatomy_soft_value``) for the first ``round(anatomy_step_fraction * steps)`` steps, by the ``blending``
        rule; free without a map.

        Returns:
            ``(B, 1, H, W)`` images in [0, 1].
        """
        known = None
        if anatomy is not None:
            keep = anatomy_keep_weights(anatomy, self.latent_shape(), settings.anatomy_soft_value)
            steps = round(settings.anatomy_step_fraction * settings.num_inference_steps)
            known = KnownRegion(self.encode(self.anatomy_image(anatomy), generators), keep, steps, settings.blending)
        return self.reverse_pass("anatomy", known, context, uncond, settings=settings, generators=generators, **run)

    def pathology_stage(
        self, images: torch.Tensor, pathology: torch.Tensor, context: torch.Tensor, uncond: torch.Tensor | None, *,
        settings: SamplingSettings, generators: Sequence[torch.Generator], **run,
    ) -> torch.Tensor:  # fmt: skip
        """Stage 2: repaint inside ``pathology`` with the prompt's guidance while holding the re-encoded stage-1
        ``images`` everywhere outside it, at every step (by the ``blending`` rule); with ``pathology_feather`` > 0,
        the decoded finding is then composited into ``images`` with a feathered edge
        (:func:`~monai_xreal.control.blending.feathered_composite`), so the rest of the image stays as stage 1 made it.

        Returns:
            ``(B, 1, H, W)`` images in [0, 1].
        """
        keep = pathology_keep_weights(pathology, self.latent_shape())
        known = KnownRegion(self.encode(images, generators), keep, settings.num_inference_steps, settings.blending)
        painted = self.reverse_pass("pathology", known, context, uncond, settings=settings, generators=generators,
                                    **run)  # fmt: skip
        if settings.pathology_feather == 0:
            return painted
        return feathered_composite(painted, images, pathology, settings.pathology_feather)

    def anatomy_image(self, anatomy: torch.Tensor) -> torch.Tensor:
        """The anatomy controller's coarse X-ray ``clamp(D(mode(E(m))), 0, 1)``, ``(B, 1, H, W)`` in [0, 1]."""
        if self.anatomy_controller is None:
            raise XRealInputError("anatomy", "this bundle has no anatomy controller")
        controller = self.anatomy_controller
        x = AnatomyToControllerInput(max(self.anatomy_labels))(anatomy)
        z_mu, _ = controller.encode(to_channels(x, controller.encoder.in_channels))
        return to_gray(controller.decode(z_mu).clamp(0, 1))

    # -- input handling --------------------------------------------------------------------------------------

    def prepare_conditions(
        self, anatomy, pathology, prompt, control: str = "xreal", layout: str = "reader", as_dict: bool = False
    ):
        """Validate the conditions and bring them to the model grid (:class:`PrepareConditions`).

        In ``"xreal"`` control a sample with a prompt needs a non-empty pathology mask (its pathology stage would
        otherwise paint nowhere); the ControlNet reads an empty mask as "no finding here" and allows it.

        Returns:
            ``(anatomy, pathology, prompts)`` (or the transform's dict with ``as_dict``): float ``(B, 1, H, W)``
            tensors at ``spatial_shape`` (or ``None``) and ``B`` prompts.

        Raises:
            XRealInputError: naming the argument at fault.
        """
        if control == "xreal" and anatomy is not None and self.anatomy_controller is None:
            raise XRealInputError("anatomy", "this bundle has no anatomy controller")
        prepare = PrepareConditions(self.spatial_shape, self.anatomy_labels, self.device, control == "xreal", layout)
        data = prepare({"anatomy": anatomy, "pathology": pathology, "prompt": prompt})
        return data if as_dict else (data["anatomy"], data["pathology"], data["prompt"])


def _check_family(anatomy_controller: nn.Module | None, families: Mapping[str, str]) -> None:
    """Refuse an anatomy controller trained in another model family than the LDM's autoencoder."""
    ours, theirs = families.get("autoencoder"), families.get("anatomy_controller")
    if anatomy_controller is not None and ours is not None and theirs is not None and ours != theirs:
        raise XRealInputError(
            "anatomy_controller", f"comes from model family {theirs!r} but the autoencoder from {ours!r}: an anatomy "
            "controller only works with the latent diffusion model it was trained with",
        )  # fmt: skip
