# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What every pipeline over a frozen text-conditioned latent diffusion model shares: its networks, its bundle,
its prompts, its samplers and one reverse pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.networks.schedulers import Scheduler
from monai.transforms import Resize
from torch import nn

from monai_xreal.control import (
    KnownRegion,
    StepCallback,
    denoise,
    make_scheduler,
    per_sample_randn,
    scheduler_name,
    set_timesteps,
)
from monai_xreal.errors import XRealInputError
from monai_xreal.pipeline.codec import LatentCodec
from monai_xreal.pipeline.settings import SamplingSettings
from monai_xreal.seeding import batch_seeds, generators
from monai_xreal.text.cache import PromptEmbeddingCache

__all__ = ["LatentDiffusionPipeline", "Progress"]

DEFAULT_LABELS = {0: "background", 1: "right lung", 2: "left lung", 3: "heart", 4: "mediastinum"}


class Progress:
    """A step callback that also advances a progress bar (``tqdm``) over ``total`` reverse steps."""

    def __init__(self, callback: StepCallback | None, total: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.callback = callback
        self.bar = tqdm(total=total, disable=not enabled, unit="step")

    def __call__(self, stage: str, index: int, timestep: torch.Tensor, latents: torch.Tensor) -> None:
        if self.callback is not None:
            self.callback(stage, index, timestep, latents)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class LatentDiffusionPipeline:
    """A frozen text-conditioned LDM: autoencoder, UNet, text encoder and scheduler, built from a bundle.

    Images are ``(B, 1, H, W)`` floats in [0, 1] in MONAI's reader order (what ``LoadImage`` returns); latents are
    the autoencoder's latents times ``scale_factor`` (see :class:`~monai_xreal.pipeline.codec.LatentCodec`).

    Args:
        autoencoder: the LDM's ``AutoencoderKL``.
        unet: the frozen ``DiffusionModelUNet`` with cross-attention.
        text_encoder: prompts ``list[str]`` to embeddings ``(B, L, D)``.
        scheduler: the MONAI scheduler the UNet was trained with (its betas are reused by other samplers).
        scale_factor: latent scale factor of the autoencoder.
        anatomy_labels: label value to name (bundle metadata).
        spatial_shape: the model's image grid ``(H, W)``.
        device: where the networks run; defaults to where the UNet is.
        embedding_cache_size: how many prompt embeddings to keep between calls.
        sampling_defaults: the bundle's values for the sampling knobs (see
            :mod:`monai_xreal.pipeline.settings`; XReal's for those not given).
        image_range: the values the autoencoder's images span (``(0, 1)``; Stable Diffusion: ``(-1, 1)``).
        prompt_adapter: the trainable module the UNet was trained behind (text embeddings to its context tokens).
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        unet: nn.Module,
        text_encoder: nn.Module,
        scheduler: Scheduler,
        scale_factor: float = 1.0,
        anatomy_labels: Mapping[int | str, str] | None = None,
        spatial_shape: Sequence[int] = (256, 256),
        device: torch.device | str | None = None,
        embedding_cache_size: int = 128,
        sampling_defaults: Mapping[str, float] | None = None,
        image_range: Sequence[float] = (0.0, 1.0),
        prompt_adapter: nn.Module | None = None,
    ) -> None:
        self.codec = LatentCodec(autoencoder, scale_factor, image_range)
        self.unet = unet.eval().requires_grad_(False)
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.prompt_adapter = None if prompt_adapter is None else prompt_adapter.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.anatomy_labels = {int(k): str(v) for k, v in (anatomy_labels or DEFAULT_LABELS).items()}
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.embedding_cache_size = embedding_cache_size
        self.sampling_defaults = SamplingSettings.resolve(sampling_defaults).knobs()
        self._prompt_cache = PromptEmbeddingCache(self.text_encoder, embedding_cache_size)
        self.device = torch.device("cpu")

    # -- the parts -------------------------------------------------------------------------------------------

    @property
    def autoencoder(self) -> nn.Module:
        return self.codec.autoencoder

    @property
    def scale_factor(self) -> float:
        return self.codec.scale_factor

    @property
    def image_range(self) -> tuple[float, float]:
        return self.codec.image_range

    def modules(self) -> dict[str, nn.Module | None]:
        """Every network by its bundle name."""
        return {"autoencoder": self.autoencoder, "unet": self.unet, "text_encoder": self.text_encoder,
                "prompt_adapter": self.prompt_adapter}  # fmt: skip

    @classmethod
    def from_bundle(
        cls,
        bundle_root: str | Path | None = None,
        device: torch.device | str | None = None,
        config_file: str = "configs/inference.json",
        overrides: Mapping[str, Any] | None = None,
    ):
        """Build the pipeline from a bundle folder's ``pipeline`` config id and load its ``models/`` weights.

        Args:
            bundle_root: the bundle folder; ``None`` is the embedded ``cxr_xreal`` bundle.
            device: where to run; ``None`` picks the bundle config's ``device``.
            config_file: the config holding the pipeline definition, relative to ``bundle_root``.
            overrides: config ids to set before parsing, as ``monai.bundle run`` does with ``--id value``
                (e.g. ``{"report_adapter": True}``).
        """
        from monai_xreal.bundle import default_bundle_path, load_bundle_weights, read_bundle_config

        root = Path(bundle_root) if bundle_root is not None else default_bundle_path()
        parser = read_bundle_config(root, config_file)
        for key, value in (overrides or {}).items():
            parser[key] = value
        if device is not None:
            parser["device"] = str(device)
        pipeline = parser.get_parsed_content("pipeline", instantiate=True)
        load_bundle_weights(pipeline, root)
        if not isinstance(pipeline, cls):
            pipeline = cls.from_pipeline(pipeline)
        return pipeline.to(pipeline.device)

    def clear_prompt_cache(self) -> None:
        """Forget the cached prompt embeddings (the text encoder's weights changed, e.g. while it is trained)."""
        self._prompt_cache.clear()

    def to(self, device: torch.device | str):
        """Move every network to ``device``."""
        self.device = torch.device(device)
        for module in self.modules().values():
            if module is not None:
                module.to(self.device)
        self._prompt_cache.clear()
        return self

    # -- building blocks -------------------------------------------------------------------------------------

    def settings(self, scheduler: str | Scheduler | None = None, **knobs: float | None) -> SamplingSettings:
        """What a call with these arguments samples with: the bundle's defaults, overridden by every knob that
        is not ``None``, and the sampler's name. Raises :class:`XRealInputError` for an unknown or bad value."""
        name = scheduler.lower() if isinstance(scheduler, str) else scheduler_name(self.sampler(scheduler))
        settings = SamplingSettings.resolve(self.sampling_defaults, scheduler=name, **knobs)
        train_steps = getattr(self.scheduler, "num_train_timesteps", None)
        if train_steps is not None and settings.num_inference_steps > train_steps:
            raise XRealInputError("num_inference_steps", f"{settings.num_inference_steps} is more than the "
                                  f"{train_steps} steps the model was trained on")  # fmt: skip
        return settings

    def sampler(self, scheduler: str | Scheduler | None) -> Scheduler:
        """The bundle's scheduler (``None``), another kind on its noise schedule (a name), or the object given."""
        if scheduler is None:
            return self.scheduler
        if isinstance(scheduler, str):
            try:
                return make_scheduler(scheduler.lower(), self.scheduler)
            except ValueError as err:
                raise XRealInputError("scheduler", str(err)) from err
        return scheduler

    def generators(self, seed: int | Sequence[int] | None, batch: int) -> list[torch.Generator]:
        """One random stream per sample (see :mod:`monai_xreal.seeding`)."""
        return generators(batch_seeds(seed, batch), self.device)

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """``(B, L, D)`` context; each distinct prompt goes through the text encoder once and is cached (the
        ``prompt_adapter``, when there is one, maps the cached embeddings to its ``(B, N, D)`` tokens)."""
        embeddings = self._prompt_cache(prompts, self.device)
        if self.prompt_adapter is None:
            return embeddings
        with torch.no_grad():
            return self.prompt_adapter(embeddings)

    def encode(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Scaled latents ``(B, C, h, w)`` of images ``(B, 1, H, W)`` in [0, 1] (see :class:`LatentCodec`)."""
        return self.codec.encode(images, generators)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 1, H, W)`` in [0, 1] from scaled latents."""
        return self.codec.decode(latents)

    def latent_shape(self) -> tuple[int, int]:
        """The latent grid ``(h, w)`` of the model's images."""
        return self.codec.latent_shape(self.spatial_shape)

    def reverse_pass(
        self,
        stage: str,
        known: KnownRegion | None,
        context: torch.Tensor,
        uncond_context: torch.Tensor | None,
        settings: SamplingSettings,
        sampler: Scheduler,
        generators: Sequence[torch.Generator],
        callback: StepCallback | None = None,
        timestep_spacing: str = "leading",
        batched_guidance: bool = True,
        unet: nn.Module | None = None,
    ) -> torch.Tensor:
        """One reverse pass from fresh noise, holding ``known`` (if any), decoded: ``(B, 1, H, W)`` in [0, 1].

        Args:
            stage: the name passed to ``callback``.
            known: the latent region to hold and for how many steps (``None``: free sampling).
            context: ``(B, L, D)`` text context of the conditional branch.
            uncond_context: ``(B, L, D)`` empty-prompt context; ``None`` runs without guidance (one UNet pass).
            settings: the resolved knobs (steps, guidance scale, eta).
            sampler, generators: the scheduler and one random stream per sample.
            unet: the network to call (default: the LDM's UNet; the ControlNet baseline passes its wrapped one).
        """
        timesteps = set_timesteps(sampler, settings.num_inference_steps, self.device, timestep_spacing)
        shape = (self.unet.in_channels, *self.latent_shape())
        unet = unet if unet is not None else self.unet
        # the latents live in the UNet's own dtype: under autocast the context may come back in bfloat16, but the
        # scheduler's updates stay in the weights' precision (as diffusers keeps them)
        latents = per_sample_randn(shape, generators, self.device, next(unet.parameters()).dtype)
        latents = denoise(
            unet, sampler, timesteps, latents, generators, context, uncond_context,
            settings.guidance_scale, settings.eta, known, stage, callback, batched_guidance,
        )  # fmt: skip
        return self.decode(latents)

    def as_output(self, images: torch.Tensor, reference: Any) -> MetaTensor:
        """``images`` as a ``MetaTensor`` whose affine places the model grid over the input map's (``reference``,
        when it is a ``MetaTensor`` from ``LoadImage``; else the identity scaled to the model grid)."""
        affine = None
        if isinstance(reference, MetaTensor) and reference.ndim >= 2:
            single = reference.reshape(-1, *reference.shape[-2:])[:1]
            plane = MetaTensor(single.as_tensor(), affine=reference.affine[-1] if reference.affine.ndim == 3
                               else reference.affine)  # fmt: skip
            affine = Resize(self.spatial_shape, mode="nearest")(plane).affine
        return MetaTensor(images, affine=affine)
