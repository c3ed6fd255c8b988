# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""XRealPipeline: anatomy- and pathology-controlled CXR generation on a frozen latent diffusion model."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.schedulers import Scheduler
from torch import nn
from tqdm.auto import tqdm

from monai_xreal.bundle import default_bundle_path, load_bundle_weights, read_bundle_config
from monai_xreal.control import (
    ControlledUNet,
    KnownRegion,
    StepCallback,
    anatomy_keep_weights,
    controlnet_condition,
    denoise,
    make_scheduler,
    scheduler_name,
    pathology_keep_weights,
    per_sample_randn,
    set_timesteps,
)
from monai_xreal.errors import XRealInputError
from monai_xreal.text.cache import PromptEmbeddingCache
from monai_xreal.transforms import AnatomyToControllerInput, BoxesToMask, ValidateLabelMap

__all__ = ["XREAL_SAMPLING", "XRealPipeline"]

# XReal's published sampling settings; a bundle may tune them for its weights (``sampling_defaults``)
XREAL_SAMPLING = {
    "num_inference_steps": 100,
    "guidance_scale": 7.0,
    "anatomy_soft_value": 0.2,
    "anatomy_step_fraction": 0.5,
    "eta": 1.0,
}

Mask = torch.Tensor
Boxes = Sequence  # one (N, 4) array-like per sample


class XRealPipeline:
    """Controllable CXR generation with XReal's two controllers over a frozen text-conditioned LDM.

    Stage 1 (anatomy): the anatomy controller turns the label map into a coarse X-ray, whose latent is blended
    into the sample (weight 1 in organs, ``anatomy_soft_value`` elsewhere) during the first
    ``anatomy_step_fraction`` of the steps. Stage 2 (pathology): the stage-1 image is re-encoded and held fixed
    outside the pathology mask at every step while the model paints inside it, guided by the prompt.

    Images are ``(B, 1, H, W)`` floats in [0, 1], with spatial axes in MONAI's reader order (what ``LoadImage``
    returns and ``SaveImage`` writes back). Latents are the autoencoder's latents times ``scale_factor``.

    Args:
        autoencoder: the LDM's ``AutoencoderKL`` (images in [0, 1]).
        unet: the frozen ``DiffusionModelUNet`` with cross-attention.
        text_encoder: prompts ``list[str]`` to embeddings ``(B, L, cross_attention_dim)``.
        scheduler: the MONAI scheduler the UNet was trained with (its betas are reused by other samplers).
        anatomy_controller: the mask-to-image ``AutoencoderKL``; ``None`` disables anatomy control.
        controlnet: a MONAI ``ControlNet`` trained over ``unet`` on :func:`monai_xreal.control.controlnet_condition`
            (the baseline XReal compares against); ``None`` if the bundle has none.
        scale_factor: latent scale factor of the autoencoder.
        anatomy_labels: label value to name, e.g. ``{0: "background", 1: "right lung", ...}`` (bundle metadata).
        spatial_shape: the model's image grid ``(H, W)``; masks of other sizes are resized to it.
        device: where the networks run; defaults to where they are.
        embedding_cache_size: how many prompt embeddings to keep between calls.
        sampling_defaults: values of ``__call__``'s sampling knobs used when a call leaves them ``None``
            (:data:`XREAL_SAMPLING` for the knobs not given; a bundle sets them for its weights).
        image_range: the values the autoencoder's images span: ``(0, 1)`` for XReal / Cheff and MONAI-trained
            models, ``(-1, 1)`` for Stable Diffusion fine-tunes; the pipeline's images are always in [0, 1].
        families: the model family each latent-space network was trained in, e.g.
            ``{"autoencoder": "xreal:3f2a...", "anatomy_controller": "xreal:3f2a..."}``; an anatomy controller from
            another family than the autoencoder is refused (it was trained against that LDM's latent space).
        prompt_adapter: the trainable module the UNet was trained behind (e.g.
            :class:`monai_xreal.text.ReportEmbeddingAdapter`): the text encoder's ``(B, L, D)`` embeddings to the
            ``(B, N, cross_attention_dim)`` context every network reads; ``None`` passes them through.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        unet: nn.Module,
        text_encoder: nn.Module,
        scheduler: Scheduler,
        anatomy_controller: nn.Module | None = None,
        controlnet: nn.Module | None = None,
        scale_factor: float = 1.0,
        anatomy_labels: Mapping[int | str, str] | None = None,
        spatial_shape: Sequence[int] = (256, 256),
        device: torch.device | str | None = None,
        embedding_cache_size: int = 128,
        sampling_defaults: Mapping[str, float] | None = None,
        image_range: Sequence[float] = (0.0, 1.0),
        families: Mapping[str, str] | None = None,
        prompt_adapter: nn.Module | None = None,
    ) -> None:
        _check_family(anatomy_controller, families or {})
        low, high = (float(v) for v in image_range)
        if not high > low:
            raise XRealInputError("image_range", f"must be (low, high) with high > low, got {tuple(image_range)}")
        self.image_range = (low, high)
        self.families = dict(families or {})
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.unet = unet.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.anatomy_controller = (
            None if anatomy_controller is None else anatomy_controller.eval().requires_grad_(False)
        )
        self.controlnet = None if controlnet is None else controlnet.eval().requires_grad_(False)
        self.prompt_adapter = None if prompt_adapter is None else prompt_adapter.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.scale_factor = float(scale_factor)
        labels = anatomy_labels or {0: "background", 1: "right lung", 2: "left lung", 3: "heart", 4: "mediastinum"}
        self.anatomy_labels = {int(k): str(v) for k, v in labels.items()}
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.embedding_cache_size = embedding_cache_size
        unknown = set(sampling_defaults or {}) - set(XREAL_SAMPLING)
        if unknown:
            known = sorted(XREAL_SAMPLING)
            raise XRealInputError("sampling_defaults", f"unknown knob(s) {sorted(unknown)}; known: {known}")
        self.sampling_defaults = {**XREAL_SAMPLING, **(sampling_defaults or {})}
        self._prompt_cache = PromptEmbeddingCache(self.text_encoder, embedding_cache_size)
        self.to(device if device is not None else next(self.unet.parameters()).device)

    @classmethod
    def from_bundle(
        cls,
        bundle_root: str | Path | None = None,
        device: torch.device | str | None = None,
        config_file: str = "configs/inference.json",
        overrides: Mapping[str, Any] | None = None,
    ) -> XRealPipeline:
        """Build the pipeline from a bundle folder's ``pipeline`` config id and load its ``models/`` weights.

        Args:
            bundle_root: the bundle folder; ``None`` is the embedded ``cxr_xreal`` bundle.
            device: where to run; ``None`` picks the bundle config's ``device``.
            config_file: the config holding the network definitions, relative to ``bundle_root``.
            overrides: config ids to set before parsing, as ``monai.bundle run`` does with ``--id value``
                (e.g. ``{"report_adapter": True}``).
        """
        root = Path(bundle_root) if bundle_root is not None else default_bundle_path()
        parser = read_bundle_config(root, config_file)
        for key, value in (overrides or {}).items():
            parser[key] = value
        if device is not None:
            parser["device"] = str(device)
        pipeline = parser.get_parsed_content("pipeline", instantiate=True)
        load_bundle_weights(pipeline, root)
        return pipeline.to(pipeline.device)

    def to(self, device: torch.device | str) -> XRealPipeline:
        """Move every network to ``device``."""
        self.device = torch.device(device)
        modules = (self.autoencoder, self.unet, self.text_encoder, self.anatomy_controller, self.controlnet,
                   self.prompt_adapter)  # fmt: skip
        for module in modules:
            if module is not None:
                module.to(self.device)
        self._prompt_cache.clear()
        return self

    def sampling_settings(self, scheduler: str | Scheduler | None = None, **knobs: float | None) -> dict:
        """What a call with these arguments samples with: each knob of ``sampling_defaults`` (``None`` or absent:
        the default) and the scheduler's name (``ddim``, ``ddpm``, ``pndm``, else its class name)."""
        unknown = set(knobs) - set(self.sampling_defaults)
        if unknown:
            raise XRealInputError("sampling", f"unknown knob(s) {sorted(unknown)}; known: {sorted(XREAL_SAMPLING)}")
        settings = {k: default if knobs.get(k) is None else knobs[k] for k, default in self.sampling_defaults.items()}
        chosen = scheduler.lower() if isinstance(scheduler, str) else scheduler_name(self._sampler(scheduler))
        settings["scheduler"] = chosen
        return settings

    # -- building blocks -------------------------------------------------------------------------------------

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(B, L, D)`` context; each distinct prompt goes through the text encoder once and is cached (the
        ``prompt_adapter``, when there is one, maps the cached embeddings to its ``(B, N, D)`` tokens)."""
        embeddings = self._prompt_cache(prompts, self.device)
        if self.prompt_adapter is None:
            return embeddings
        with torch.no_grad():
            return self.prompt_adapter(embeddings)

    def anatomy_image(self, anatomy: torch.Tensor) -> torch.Tensor:
        """The anatomy controller's coarse X-ray ``clamp(D(mode(E(m))), 0, 1)``, ``(B, 1, H, W)`` in [0, 1]."""
        controller = self.anatomy_controller
        x = AnatomyToControllerInput(max(self.anatomy_labels))(anatomy)
        z_mu, _ = controller.encode(_to_channels(x, controller.encoder.in_channels))
        return _to_gray(controller.decode(z_mu).clamp(0, 1))

    def encode(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Scaled latent sample ``(B, C, h, w)`` of images ``(B, 1, H, W)`` in [0, 1]; noise from ``generators``."""
        low, high = self.image_range
        images = images * (high - low) + low
        z_mu, z_sigma = self.autoencoder.encode(_to_channels(images, self.autoencoder.encoder.in_channels))
        noise = per_sample_randn(z_mu.shape[1:], generators, z_mu.device, z_mu.dtype)
        return (z_mu + z_sigma * noise) * self.scale_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 1, H, W)`` in [0, 1] from scaled latents."""
        low, high = self.image_range
        images = (self.autoencoder.decode(latents / self.scale_factor) - low) / (high - low)
        return _to_gray(images.clamp(0, 1))

    # -- generation ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        anatomy: Mask | None = None,
        pathology: Mask | Boxes | None = None,
        prompt: str | Sequence[str] = "",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        anatomy_soft_value: float | None = None,
        anatomy_step_fraction: float | None = None,
        eta: float | None = None,
        scheduler: str | Scheduler | None = None,
        timestep_spacing: str = "leading",
        seed: int | Sequence[int] | None = None,
        callback: StepCallback | None = None,
        progress: bool = False,
        control: str = "xreal",
        controlnet_scale: float = 1.0,
        batched_guidance: bool = True,
    ) -> torch.Tensor:
        """Generate CXRs that follow an anatomy label map, a pathology region and a prompt.

        Args:
            anatomy: ``(B, 1, H, W)`` (or ``(H, W)``) integer label map in the bundle's label set; ``None`` for
                generation without anatomy control.
            pathology: ``(B, 1, H, W)`` binary mask (1 = paint the finding here), or a sequence of ``B``
                ``(N, 4)`` box arrays in the anatomy mask's pixel grid (see ``BoxesToMask``); ``None`` for no
                pathology stage, in which case the prompt conditions the anatomy stage instead.
            prompt: one prompt for the batch, or ``B`` prompts.
            num_inference_steps: reverse steps per stage (XReal: 100).
            guidance_scale: classifier-free guidance weight on the prompt against the empty prompt (XReal: 7.0).
            anatomy_soft_value: blending weight outside organs in the anatomy stage (XReal: 0.2).
            anatomy_step_fraction: share of the steps, from the start, with anatomy blending (XReal: 0.5).
            eta: DDIM noise weight (XReal: 1.0).
                Each knob left ``None`` takes the pipeline's ``sampling_defaults`` (the bundle's, else XReal's).
            scheduler: ``"ddim"``, ``"ddpm"``, ``"pndm"``, a MONAI scheduler object, or ``None`` for the bundle's.
            timestep_spacing: ``"leading"`` (CompVis / XReal grid) or ``"scheduler"`` (the scheduler's own).
            seed: an int (sample ``i`` uses ``seed + i``), one int per sample, or ``None`` for fresh seeds.
            callback: ``callback(stage, step_index, timestep, latents)`` after each blending.
            progress: show a progress bar over the steps.
            control: ``"xreal"`` (the two controllers) or ``"controlnet"`` (one guided pass through the bundle's
                ControlNet on the anatomy and pathology masks: the baseline XReal compares against).
            controlnet_scale: weight of the ControlNet's residuals (``"controlnet"`` only).
            batched_guidance: run guidance's conditional and unconditional branches as one UNet call on ``2B``
                samples (default) or as two calls on ``B`` (XReal's release); the images are the same.

        Returns:
            ``(B, 1, H, W)`` float images in [0, 1] at the model's ``spatial_shape``.
        """
        anatomy, pathology, prompts = self.prepare_conditions(anatomy, pathology, prompt, control)
        batch = len(prompts)
        knobs = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "eta": eta,
                 "anatomy_soft_value": anatomy_soft_value, "anatomy_step_fraction": anatomy_step_fraction}  # fmt: skip
        knobs = {k: self.sampling_defaults[k] if v is None else v for k, v in knobs.items()}
        num_inference_steps, guidance_scale, eta = knobs["num_inference_steps"], knobs["guidance_scale"], knobs["eta"]
        anatomy_soft_value, anatomy_step_fraction = knobs["anatomy_soft_value"], knobs["anatomy_step_fraction"]
        _check_knobs(num_inference_steps, guidance_scale, anatomy_soft_value, anatomy_step_fraction, eta)
        self._check_control(control, anatomy)
        generators = self._generators(seed, batch)
        sampler = self._sampler(scheduler)
        latent_shape = self._latent_shape()

        empty = self.encode_prompts([""] * batch)
        context = self.encode_prompts(prompts)
        uncond = empty if guidance_scale != 1.0 and any(prompts) else None  # None: no guidance, one UNet pass
        stages = 2 if control == "xreal" and pathology is not None else 1
        bar = tqdm(total=num_inference_steps * stages, disable=not progress, unit="step")
        sample_stage = functools.partial(
            self._sample_stage, sampler=sampler, generators=generators, num_inference_steps=num_inference_steps,
            timestep_spacing=timestep_spacing, guidance_scale=guidance_scale, eta=eta,
            callback=_with_progress(callback, bar), batched_guidance=batched_guidance,
        )  # fmt: skip

        if control == "controlnet":  # the baseline: masks steer every step through the ControlNet's residuals
            condition = self._controlnet_condition(anatomy, pathology, batch)
            unet = ControlledUNet(self.unet, self.controlnet, condition, controlnet_scale)
            images = sample_stage("controlnet", None, context=context, uncond_context=uncond, unet=unet)
            bar.close()
            return images

        # Stage 1, anatomy: hold the controller's latent in the organs for the first part of the schedule
        known = None
        if anatomy is not None:
            anatomy_latents = self.encode(self.anatomy_image(anatomy), generators)
            keep = anatomy_keep_weights(anatomy, latent_shape, anatomy_soft_value)
            known = KnownRegion(anatomy_latents, keep, round(anatomy_step_fraction * num_inference_steps))
        if pathology is not None:  # XReal: the anatomy stage runs on the empty prompt when a pathology follows
            images = sample_stage("anatomy", known, context=empty, uncond_context=None)
        else:
            images = sample_stage("anatomy", known, context=context, uncond_context=uncond)

        # Stage 2, pathology: keep the stage-1 image outside the mask at every step, paint inside with guidance
        if pathology is not None:
            keep = pathology_keep_weights(pathology, latent_shape)
            known = KnownRegion(self.encode(images, generators), keep, num_inference_steps)
            images = sample_stage("pathology", known, context=context, uncond_context=uncond)
        bar.close()
        return images

    def _sample_stage(
        self, stage: str, known: KnownRegion | None, *, context: torch.Tensor, uncond_context: torch.Tensor | None,
        sampler: Scheduler, generators: Sequence[torch.Generator], num_inference_steps: int, timestep_spacing: str,
        guidance_scale: float, eta: float, callback: StepCallback, batched_guidance: bool = True,
        unet: nn.Module | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """One reverse pass from fresh noise, decoded: ``(B, 1, H, W)`` images in [0, 1]."""
        timesteps = set_timesteps(sampler, num_inference_steps, self.device, timestep_spacing)
        shape = (self.unet.in_channels, *self._latent_shape())
        latents = per_sample_randn(shape, generators, self.device, context.dtype)
        latents = denoise(
            unet if unet is not None else self.unet, sampler, timesteps, latents, generators, context, uncond_context,
            guidance_scale, eta, known, stage, callback, batched_guidance,
        )  # fmt: skip
        return self.decode(latents)

    # -- input handling --------------------------------------------------------------------------------------

    def prepare_conditions(
        self, anatomy, pathology, prompt, control: str = "xreal"
    ) -> tuple[Mask | None, Mask | None, list[str]]:
        """Validate the conditions and bring them to the model grid.

        In ``"xreal"`` control a sample with a prompt needs a non-empty pathology mask (its pathology stage would
        otherwise paint nowhere); the ControlNet reads an empty mask as "no finding here" and allows it.

        Returns:
            ``(anatomy, pathology, prompts)``: float ``(B, 1, H, W)`` tensors at ``spatial_shape`` (or ``None``)
            and ``B`` prompts.

        Raises:
            XRealInputError: naming the argument at fault.
        """
        reference_shape = self.spatial_shape
        if anatomy is not None:
            anatomy = _as_mask_batch(anatomy, "anatomy").to(self.device)
            ValidateLabelMap(sorted(self.anatomy_labels), "anatomy")(anatomy)
            reference_shape = tuple(anatomy.shape[2:])
            anatomy = F.interpolate(anatomy.float(), size=self.spatial_shape, mode="nearest-exact")
        if isinstance(pathology, (list, tuple)):
            pathology = torch.stack([BoxesToMask(reference_shape)(boxes) for boxes in pathology])
        if pathology is not None:
            pathology = _as_mask_batch(pathology, "pathology").to(self.device)
            if not torch.isfinite(pathology).all():
                raise XRealInputError("pathology", "contains NaN or infinite values")
            pathology = F.interpolate((pathology > 0).float(), size=self.spatial_shape, mode="nearest-exact")
        sizes = {m.shape[0] for m in (anatomy, pathology) if m is not None}
        if isinstance(prompt, str):
            prompts = [prompt] * (max(sizes) if sizes else 1)
        else:
            prompts = [str(p) for p in prompt]
        for text in set(prompts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:  # e.g. a lone surrogate from a JSON "\ud800" escape
                raise XRealInputError("prompt", f"not valid Unicode text: {err.reason} at {err.start}") from None
        sizes.add(len(prompts))
        if len(sizes) > 1:
            raise XRealInputError(
                "prompt", f"batch sizes disagree: anatomy, pathology and prompts give {sorted(sizes)}"
            )
        if pathology is not None and control == "xreal":
            empty_with_prompt = [i for i, p in enumerate(prompts) if p.strip() and not pathology[i].any()]
            if empty_with_prompt:
                raise XRealInputError(
                    "pathology", f"mask is empty for sample(s) {empty_with_prompt} that have a pathology prompt"
                )
        return anatomy, pathology, prompts

    def _check_control(self, control: str, anatomy: Mask | None) -> None:
        if control not in ("xreal", "controlnet"):
            raise XRealInputError("control", f"{control!r} is not 'xreal' or 'controlnet'")
        if control == "controlnet" and self.controlnet is None:
            raise XRealInputError("control", "this bundle has no ControlNet (controlnet_def and its weights)")
        if control == "xreal" and anatomy is not None and self.anatomy_controller is None:
            raise XRealInputError("anatomy", "this bundle has no anatomy controller")

    def _controlnet_condition(self, anatomy: Mask | None, pathology: Mask | None, batch: int) -> torch.Tensor:
        if anatomy is None and pathology is None:  # no masks: the ControlNet sees an empty condition
            anatomy = torch.zeros((batch, 1, *self.spatial_shape), device=self.device)
        condition = controlnet_condition(anatomy, pathology, max(self.anatomy_labels))
        return condition.to(self.device)

    def _generators(self, seed: int | Sequence[int] | None, batch: int) -> list[torch.Generator]:
        if seed is None:
            seeds = torch.randint(0, 2**62, (batch,)).tolist()
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(batch)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != batch:
                raise XRealInputError("seed", f"{len(seeds)} seeds given for a batch of {batch}")
        return [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def _sampler(self, scheduler: str | Scheduler | None) -> Scheduler:
        if scheduler is None:
            return self.scheduler
        if isinstance(scheduler, str):
            try:
                return make_scheduler(scheduler.lower(), self.scheduler)
            except ValueError as err:
                raise XRealInputError("scheduler", str(err)) from err
        return scheduler

    def _latent_shape(self) -> tuple[int, int]:
        # AutoencoderKL halves the grid at every level but the last
        factor = 2 ** (len(self.autoencoder.encoder.channels) - 1)
        return (self.spatial_shape[0] // factor, self.spatial_shape[1] // factor)


def _check_family(anatomy_controller: nn.Module | None, families: Mapping[str, str]) -> None:
    """Refuse an anatomy controller trained in another model family than the LDM's autoencoder."""
    ours, theirs = families.get("autoencoder"), families.get("anatomy_controller")
    if anatomy_controller is not None and ours is not None and theirs is not None and ours != theirs:
        raise XRealInputError(
            "anatomy_controller", f"comes from model family {theirs!r} but the autoencoder from {ours!r}: an anatomy "
            "controller only works with the latent diffusion model it was trained with",
        )  # fmt: skip


def _as_mask_batch(mask, argument: str) -> torch.Tensor:
    """``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)`` to a float ``(B, 1, H, W)`` tensor, else an error."""
    mask = torch.as_tensor(mask.as_tensor() if hasattr(mask, "as_tensor") else mask)
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise XRealInputError(
            argument, f"expected a 2D mask (H, W), (1, H, W) or (B, 1, H, W); got {tuple(mask.shape)}"
        )
    if mask.numel() == 0:
        raise XRealInputError(argument, f"the mask is empty: shape {tuple(mask.shape)}")
    if mask.is_floating_point() and not torch.isfinite(mask).all():
        raise XRealInputError(argument, "contains NaN or infinite values")
    return mask.float()


def _check_knobs(steps: int, guidance: float, soft: float, fraction: float, eta: float) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise XRealInputError("num_inference_steps", f"must be a positive integer, got {steps!r}")
    if not math.isfinite(guidance):
        raise XRealInputError("guidance_scale", f"must be finite, got {guidance!r}")
    for name, value in (("anatomy_soft_value", soft), ("anatomy_step_fraction", fraction)):
        if not 0.0 <= value <= 1.0:
            raise XRealInputError(name, f"must be in [0, 1], got {value!r}")
    if not eta >= 0.0:
        raise XRealInputError("eta", f"must be >= 0, got {eta!r}")


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey ``(B, 1, H, W)`` to the network's channel count (XReal's autoencoders take 3 identical channels)."""
    return images if images.shape[1] == channels else images.expand(-1, channels, -1, -1)


def _to_gray(images: torch.Tensor) -> torch.Tensor:
    return images if images.shape[1] == 1 else images.mean(dim=1, keepdim=True)


def _with_progress(callback: StepCallback | None, bar) -> StepCallback:
    def step(stage: str, index: int, timestep: torch.Tensor, latents: torch.Tensor) -> None:
        if callback is not None:
            callback(stage, index, timestep, latents)
        bar.update(1)

    return step
