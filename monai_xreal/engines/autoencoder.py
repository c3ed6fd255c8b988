# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Training a KL autoencoder as a VAE-GAN: the LDM's image autoencoder and XReal's mask-to-image controller."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.losses import PatchAdversarialLoss
from monai.utils import CommonKeys as Keys
from torch import nn
from torch.optim import Optimizer

from monai_xreal.transforms import AnatomyToControllerInput

__all__ = ["kl_divergence", "AutoencoderPrepareBatch", "AutoencoderKLTrainer"]


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the latent, averaged over the batch (a scalar)."""
    per_sample = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2).clamp_min(1e-12)) - 1)
    return per_sample.flatten(1).sum(dim=1).mean()


class AutoencoderPrepareBatch:
    """``prepare_batch`` for autoencoder training: ``(inputs, targets)`` from a dict batch.

    Plain autoencoder: inputs and targets are both ``batch[image_key]``. Mask-to-image controller (XReal's anatomy
    controller): each sample's input is, with probability ``condition_prob``, its anatomy label map scaled to [0, 1]
    by ``max_label`` (what the controller sees at inference) and otherwise the image itself; the target is always
    the image. This is the training the published controller was meant to have: its own code never reads the
    target, so its mask-to-image half cannot learn.

    Args:
        image_key: the ``(B, 1, H, W)`` image in [0, 1].
        condition_key: the ``(B, 1, H, W)`` label map, or ``None`` for plain reconstruction.
        max_label: the largest anatomy label (the controller input is ``labels / max_label``).
        condition_prob: share of samples whose input is the label map.
    """

    def __init__(
        self,
        image_key: str = "image",
        condition_key: str | None = None,
        max_label: int = 4,
        condition_prob: float = 0.5,
    ) -> None:
        if not 0.0 <= condition_prob <= 1.0:
            raise ValueError(f"condition_prob must be in [0, 1], got {condition_prob}")
        self.image_key = image_key
        self.condition_key = condition_key
        self.to_controller_input = AnatomyToControllerInput(max_label)  # what the pipeline feeds the controller
        self.condition_prob = condition_prob

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.as_tensor(batchdata[self.image_key]).to(device, non_blocking=non_blocking, **kwargs).float()
        if self.condition_key is None:
            return images, images
        masks = torch.as_tensor(batchdata[self.condition_key]).to(device, non_blocking=non_blocking, **kwargs)
        use_mask = torch.rand(images.shape[0], device=images.device) < self.condition_prob
        inputs = torch.where(use_mask.view(-1, 1, 1, 1), self.to_controller_input(masks), images)
        return inputs, images


class AutoencoderKLTrainer(Trainer):
    """VAE-GAN training of a MONAI ``AutoencoderKL``, the LDM recipe as an ignite engine.

    Generator loss ``L1(x_hat, y) + kl_weight * KL + perceptual_weight * P(x_hat, y) + adversarial_weight * G_adv``,
    where the adversarial terms (a ``PatchDiscriminator`` with ``PatchAdversarialLoss``) start once
    ``adversarial_warmup_iterations`` iterations have run, so the discriminator does not fight an autoencoder
    that cannot yet reconstruct. Without a discriminator it trains L1 + KL (+ perceptual) only.

    ``engine.state.output`` holds ``image``, ``label`` (the target), ``pred`` (the reconstruction) and the
    scalars ``loss`` (generator total), ``recon_loss``, ``kl_loss``, ``perceptual_loss``, ``generator_loss``,
    ``discriminator_loss``.

    Args:
        device: where the networks run.
        max_epochs: epochs to train.
        train_data_loader: dict batches; ``prepare_batch`` turns them into ``(inputs, targets)``.
        network: the ``AutoencoderKL``; ``network(x)`` returns ``(reconstruction, z_mu, z_sigma)``.
        optimizer: the autoencoder's optimizer.
        discriminator: a ``PatchDiscriminator`` (its last output is the logits), or ``None``.
        d_optimizer: the discriminator's optimizer (required with a discriminator).
        kl_weight: weight of the KL term (XReal's controller: 1e-6).
        perceptual_loss: ``loss(x_hat, y)`` on images, e.g. :class:`monai_xreal.losses.LocalPerceptualLoss`.
        perceptual_weight: its weight.
        adversarial_weight: weight of both adversarial terms (XReal: 0.5).
        adversarial_warmup_iterations: iterations before the adversarial terms start (XReal: 5000).
        prepare_batch: e.g. :class:`AutoencoderPrepareBatch`.
        train_handlers, key_train_metric, ...: as in MONAI's ``SupervisedTrainer``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: Optimizer,
        discriminator: nn.Module | None = None,
        d_optimizer: Optimizer | None = None,
        kl_weight: float = 1e-6,
        perceptual_loss: Callable | None = None,
        perceptual_weight: float = 1.0,
        adversarial_weight: float = 0.5,
        adversarial_warmup_iterations: int = 0,
        prepare_batch: Callable | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        iteration_update: Callable | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        decollate: bool = False,
        optim_set_to_none: bool = False,
    ) -> None:
        if discriminator is not None and d_optimizer is None:
            raise ValueError("a discriminator needs d_optimizer")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch if prepare_batch is not None else AutoencoderPrepareBatch(),
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            decollate=decollate,
        )
        self.network = network
        self.optimizer = optimizer
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.kl_weight = kl_weight
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = perceptual_weight
        self.adversarial_weight = adversarial_weight
        self.adversarial_warmup_iterations = adversarial_warmup_iterations
        self.adversarial_loss = PatchAdversarialLoss(criterion="least_squares")
        self.optim_set_to_none = optim_set_to_none

    def adversarial_active(self) -> bool:
        """Whether this iteration trains with the discriminator (after the warm-up)."""
        return self.discriminator is not None and self.state.iteration > self.adversarial_warmup_iterations

    def _autocast(self):
        return torch.autocast(device_type=torch.device(self.state.device).type, enabled=self.amp, **self.amp_kwargs)

    def _iteration(self, engine: AutoencoderKLTrainer, batchdata: dict) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        inputs, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        adversarial = engine.adversarial_active()
        zero = torch.zeros((), device=inputs.device)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            reconstruction, z_mu, z_sigma = engine.network(inputs)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            recon_loss = (reconstruction.float() - targets.float()).abs().mean()
            kl_loss = kl_divergence(z_mu.float(), z_sigma.float())
            perceptual = zero if engine.perceptual_loss is None else engine.perceptual_loss(reconstruction, targets)
            generator = zero
            if adversarial:
                # the generator step must not touch D; a frozen DDP-wrapped D would wait for gradients, so unwrap it
                frozen = getattr(engine.discriminator, "module", engine.discriminator).requires_grad_(False)
                logits_fake = frozen(reconstruction.contiguous().float())[-1]
                generator = engine.adversarial_loss(logits_fake, target_is_real=True, for_discriminator=False)
                frozen.requires_grad_(True)
            loss = (
                recon_loss
                + engine.kl_weight * kl_loss
                + engine.perceptual_weight * perceptual
                + engine.adversarial_weight * generator
            )
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine._step(loss, engine.optimizer)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)

        discriminator = zero
        if adversarial:
            engine.discriminator.train()
            engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with engine._autocast():
                logits_fake = engine.discriminator(reconstruction.detach().contiguous().float())[-1]
                logits_real = engine.discriminator(targets.contiguous().float())[-1]
                discriminator = 0.5 * (
                    engine.adversarial_loss(logits_fake, target_is_real=False, for_discriminator=True)
                    + engine.adversarial_loss(logits_real, target_is_real=True, for_discriminator=True)
                )
            engine._step(engine.adversarial_weight * discriminator, engine.d_optimizer)
        if engine.scaler is not None:
            engine.scaler.update()  # once per iteration, after both optimisers stepped
        engine.fire_event(IterationEvents.MODEL_COMPLETED)

        return {
            Keys.IMAGE: inputs,
            Keys.LABEL: targets,
            Keys.PRED: reconstruction.detach(),
            Keys.LOSS: loss.detach(),
            "recon_loss": recon_loss.detach(),
            "kl_loss": kl_loss.detach(),
            "perceptual_loss": perceptual.detach(),
            "generator_loss": generator.detach(),
            "discriminator_loss": discriminator.detach(),
        }

    def _step(self, loss: torch.Tensor, optimizer: Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        else:
            loss.backward()
            optimizer.step()
