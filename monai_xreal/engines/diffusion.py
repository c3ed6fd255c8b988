# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Latent diffusion and ControlNet training on MONAI's ``SupervisedTrainer``: batches, scale factor, inferer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import ControlNetDiffusionInferer, Inferer
from monai.networks.schedulers import Scheduler
from monai.networks.utils import copy_model_state
from torch import nn

from monai_xreal.bundle import write_scale_factor
from monai_xreal.control.controlnet import controlnet_condition
from monai_xreal.text.cache import PromptEmbeddingCache

__all__ = [
    "latent_dataset",
    "latent_scale_factor",
    "LatentDiffusionPrepareBatch",
    "ControlNetPrepareBatch",
    "ControlNetTrainingInferer",
    "controlnet_from_unet",
]


def latent_dataset(
    data: Sequence[dict], transform, cache_dir: str | Path | None = None, num_workers: int = 0
) -> Sequence[dict]:
    """The training items with their latents encoded once by the frozen autoencoder (the deterministic transforms,
    up to the first random one, are cached; each iteration then draws ``mu + sigma * eps``).

    Args:
        data: the datalist's items.
        transform: the training transforms (``EncodeLatentd`` among the deterministic ones).
        cache_dir: ``None``: cached in memory (``CacheDataset``: every latent in RAM, fastest for small sets);
            a folder: cached on disk (``PersistentDataset``: bounded memory for any dataset size, and a resumed or
            repeated run reads the latents instead of encoding again). A cache folder belongs to one autoencoder
            and one set of transforms: use another folder when they change.
        num_workers: workers filling the in-memory cache.
    """
    from monai.data import CacheDataset, PersistentDataset

    if cache_dir is None:
        return CacheDataset(data, transform, cache_rate=1.0, num_workers=num_workers, progress=False)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return PersistentDataset(data, transform, cache_dir=cache_dir)


def latent_scale_factor(
    dataset: Sequence[dict],
    mu_key: str = "latent_mu",
    sigma_key: str = "latent_sigma",
    output_file: str | Path | None = None,
) -> float:
    """``1 / std`` of the autoencoder's latent over a dataset, so scaled latents have unit variance (the LDM rule).

    The latent is ``mu + sigma * eps``; its variance is ``Var(mu) + E[sigma^2]``, computed exactly from the
    encoded means and standard deviations (no sampling, so a resumed run gets the same value).

    Args:
        dataset: items with ``(C, h, w)`` ``mu_key`` and ``sigma_key`` (from ``monai_xreal.transforms.EncodeLatentd``).
        output_file: where to record ``{"scale_factor": ...}`` as JSON (rank 0 only under DDP), or ``None``. The
            train configs write ``scale_factor.json`` beside the weights; copied to the bundle's
            ``models/scale_factor.json`` with them, it is what ``configs/common.json``'s ``scale_factor`` reads.
    """
    count, total, total_sq, sigma_sq = 0, 0.0, 0.0, 0.0
    for index in range(len(dataset)):
        item = dataset[index]
        mu, sigma = torch.as_tensor(item[mu_key]).double(), torch.as_tensor(item[sigma_key]).double()
        count += mu.numel()
        total += mu.sum().item()
        total_sq += mu.pow(2).sum().item()
        sigma_sq += sigma.pow(2).sum().item()
    if count == 0:
        raise ValueError("latent_scale_factor: the dataset is empty")
    mean = total / count
    variance = total_sq / count - mean**2 + sigma_sq / count
    scale = float(1.0 / variance**0.5)
    if output_file is not None and not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
        write_scale_factor(output_file, scale, latent_mean=mean, num_values=count)
    return scale


class LatentDiffusionPrepareBatch(DiffusionPrepareBatch):
    """``prepare_batch`` for the latent UNet on pre-encoded latents with MONAI's ``DiffusionInferer``.

    From a batch with the latent mean and standard deviation (cached by ``EncodeLatentd``) and the prompts
    (``BuildPromptd``, whose ``drop_prob`` empties prompts for classifier-free guidance), returns
    ``(z, noise, (), {"noise", "timesteps", "condition"})`` with ``z = (mu + sigma * eps) * scale_factor``.

    The inferer keyword arguments of the last call stay in ``last_kwargs`` (handlers such as
    :class:`monai_xreal.engines.LatentNoiseFilter` read the drawn timesteps and the prompt embeddings there).

    The regression target follows the scheduler's ``prediction_type``, so a converted model keeps the
    parameterisation it was trained with: ``"epsilon"`` the noise, ``"v_prediction"`` the velocity
    ``sqrt(a) * noise - sqrt(1 - a) * z`` (MONAI's ``get_velocity``), ``"sample"`` the clean latent.

    Args:
        num_train_timesteps: the scheduler's training steps (timesteps drawn uniformly below it).
        text_encoder: prompts to ``(B, L, D)`` embeddings (frozen).
        scale_factor: the latent scale factor (:func:`latent_scale_factor`, or the converted model's).
        mu_key, sigma_key: the latent keys.
        prompt_key: the prompt key (a list of ``B`` strings after collation).
        scheduler: the noise scheduler, read for its ``prediction_type`` (``None``: epsilon).
        train_text_encoder: the encoder trains with the UNet (:class:`~monai_xreal.engines.TextConditionedUNet`):
            ``condition`` is then its tokens (``text_encoder.tokenize``), not cached embeddings, and the encoder is
            left trainable.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        text_encoder: nn.Module,
        scale_factor: float,
        mu_key: str = "latent_mu",
        sigma_key: str = "latent_sigma",
        prompt_key: str = "prompt",
        scheduler: Scheduler | None = None,
        train_text_encoder: bool = False,
    ) -> None:
        super().__init__(num_train_timesteps)
        self.text_encoder = text_encoder if train_text_encoder else text_encoder.eval().requires_grad_(False)
        self.train_text_encoder = bool(train_text_encoder)
        self.embeddings = PromptEmbeddingCache(self.text_encoder, size=4096)
        self.scale_factor = float(scale_factor)
        self.mu_key, self.sigma_key, self.prompt_key = mu_key, sigma_key, prompt_key
        self.scheduler = scheduler
        self.prediction_type = "epsilon" if scheduler is None else getattr(scheduler, "prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unknown prediction type {self.prediction_type!r}")
        self.last_kwargs: dict[str, torch.Tensor] = {}

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet regresses: see the class docstring."""
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(images, noise, timesteps)
        return images if self.prediction_type == "sample" else noise

    def latents(self, batchdata: dict, device, non_blocking: bool = False, **kwargs) -> torch.Tensor:
        """A scaled latent sample ``(B, C, h, w)``."""
        mu = torch.as_tensor(batchdata[self.mu_key]).to(device, non_blocking=non_blocking, **kwargs).float()
        sigma = torch.as_tensor(batchdata[self.sigma_key]).to(device, non_blocking=non_blocking, **kwargs).float()
        return (mu + sigma * torch.randn_like(mu)) * self.scale_factor

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
        latents = self.latents(batchdata, device, non_blocking, **kwargs)
        noise = self.get_noise(latents)
        timesteps = self.get_timesteps(latents)
        target = self.get_target(latents, noise, timesteps)
        prompts = list(batchdata[self.prompt_key])
        if self.train_text_encoder:
            condition = self.text_encoder.tokenize(prompts).to(latents.device)
        else:
            condition = self.embeddings(prompts, latents.device)
        self.last_kwargs = {"noise": noise, "timesteps": timesteps, "condition": condition}
        return latents, target, (), self.last_kwargs


class ControlNetPrepareBatch(LatentDiffusionPrepareBatch):
    """As :class:`LatentDiffusionPrepareBatch`, plus the ControlNet's condition ``cn_cond``.

    ``cn_cond`` is :func:`monai_xreal.control.controlnet_condition` of the batch's anatomy label map and
    pathology mask: ``(B, max_label + 1, H, W)`` at image resolution.

    Args:
        max_label: the largest anatomy label.
        anatomy_key, pathology_key: the ``(B, 1, H, W)`` label map and binary mask keys.
        kwargs: as :class:`LatentDiffusionPrepareBatch`.
    """

    def __init__(self, *args, max_label: int = 4, anatomy_key: str = "anatomy", pathology_key: str = "pathology",
                 **kwargs) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.max_label = max_label
        self.anatomy_key, self.pathology_key = anatomy_key, pathology_key

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
        latents, target, args, infer_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        anatomy = torch.as_tensor(batchdata[self.anatomy_key]).to(device, non_blocking=non_blocking, **kwargs)
        pathology = torch.as_tensor(batchdata[self.pathology_key]).to(device, non_blocking=non_blocking, **kwargs)
        infer_kwargs["cn_cond"] = controlnet_condition(anatomy, pathology, self.max_label)  # also in last_kwargs
        return latents, target, args, infer_kwargs


class ControlNetTrainingInferer(Inferer):
    """MONAI's ``ControlNetDiffusionInferer`` holding the frozen UNet, so that the trainer's network is the ControlNet.

    ``SupervisedTrainer`` calls ``inferer(inputs, network, noise=..., timesteps=..., condition=..., cn_cond=...)``
    with ``network`` the ControlNet being trained; the result is the UNet's noise prediction ``(B, C, h, w)``.
    """

    def __init__(self, unet: nn.Module, scheduler: Scheduler) -> None:
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        self.inferer = ControlNetDiffusionInferer(scheduler)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:
        return self.inferer(inputs, self.unet, network, *args, **kwargs)


def controlnet_from_unet(controlnet: nn.Module, unet: nn.Module) -> nn.Module:
    """Initialise a ControlNet's shared blocks from the trained UNet (the ControlNet recipe); returns ``controlnet``.

    Its zero-initialised output convolutions stay zero, so training starts from the unchanged UNet.
    """
    copy_model_state(controlnet, unet.state_dict())
    return controlnet
