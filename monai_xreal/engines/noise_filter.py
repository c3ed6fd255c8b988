# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Latent noise filtering (Diff-CXR): track each training pair's denoising loss, down-weight then drop outliers."""

from __future__ import annotations

import json
import logging
import math
import random
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from scipy.stats import median_abs_deviation
from torch import nn

from monai_xreal.engines.diffusion import LatentDiffusionPrepareBatch
from monai_xreal.errors import XRealInputError
from monai_xreal.io.atomic import write_text_atomically

__all__ = ["SampleWeightedLoss", "SampleState", "LatentNoiseFilter"]

Record = tuple[str, int, float]  # (sample id, timestep, value)
_RECENT_PROMPTS = 1024  # distinct prompts kept to draw the text probe's reference prompts from


class SampleWeightedLoss(nn.Module):
    """An element-wise loss reduced per sample, then averaged with per-sample weights.

    ``loss(pred, target)`` with ``(B, ...)`` tensors returns ``sum_i w_i l_i / sum_i w_i`` where ``l_i`` is the mean
    element-wise loss of sample ``i`` and ``w_i`` the ``sample_weights`` a handler set for the current batch (all
    ones when unset, which is the plain mean). A batch whose weights are all zero gives a zero loss with no
    gradient signal. The unweighted ``(B,)`` losses of the last call stay in ``last_sample_losses``.

    Args:
        loss: an element-wise loss (``reduction="none"``); ``None`` is the squared error.
    """

    def __init__(self, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.loss = loss if loss is not None else nn.MSELoss(reduction="none")
        self.sample_weights: torch.Tensor | None = None
        self.last_sample_losses: torch.Tensor | None = None

    def per_sample(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The unweighted ``(B,)`` mean element-wise loss of each sample."""
        return self.loss(pred, target).flatten(1).mean(1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_sample = self.per_sample(pred, target)
        self.last_sample_losses = per_sample.detach()
        if self.sample_weights is None:
            return per_sample.mean()
        weights = self.sample_weights.to(per_sample)
        if weights.shape != per_sample.shape:
            raise ValueError(f"sample_weights {tuple(weights.shape)} do not match the batch {tuple(per_sample.shape)}")
        return (weights * per_sample).sum() / weights.sum().clamp_min(1e-12)


@dataclass
class SampleState:
    """What the filter knows of one training sample.

    ``score``: smoothed log-ratio of its loss to the median loss at the same timesteps; ``text_score``: smoothed
    log-ratio of its loss with its own prompt to its loss with another training prompt (same noise and timestep),
    relative to the median at the same timesteps; ``z``: the larger robust z-score of the two among the samples still in
    training; ``strikes``: consecutive anomalous epochs (one less per normal
    epoch); ``weight``: its weight in the loss; ``dropped_epoch``: the epoch it was dropped at, or ``None``.
    """

    score: float = 0.0
    text_score: float = 0.0
    z: float = 0.0
    strikes: int = 0
    weight: float = 1.0
    dropped_epoch: int | None = None
    reason: str = ""
    epochs_seen: dict = field(default_factory=dict)


class LatentNoiseFilter:
    """Ignite handler that finds noisy or mislabelled training pairs by their denoising loss and filters them out.

    Two scores are tracked per sample, each averaged over epochs (the mean of the epochs so far, then an
    exponential moving average once that would weigh the newest epoch less than ``smoothing``):

    - the loss score: a diffusion loss depends strongly on the timestep, so each sample's loss is compared with
      the median loss of all samples at similar timesteps in the same epoch (``timestep_bins`` equal bins), as a
      log-ratio. Images unlike the rest (corrupt, another modality, mis-stored) stay high.
    - the text score (``text_probe``): the sample's latent is noised again (``probe_draws`` fresh draws, timesteps
      in ``probe_timesteps``) and denoised twice without gradient, before the optimiser step: with its own prompt
      and with another prompt of the training set (drawn from the recently seen ones). The score is the log-ratio
      of the two losses minus its median at similar timesteps. A prompt that describes its image predicts the
      noise better than a random other prompt; a wrong report does not. Pairing both predictions on one noised
      latent cancels how hard the image itself is, which varies far more between samples than a report's
      effect on the loss. Another training prompt is a sharper reference than the empty prompt: measured on the
      demo UNet, a wrong report's loss sits ~3x further from the clean samples' (robust z) against it. Samples
      whose prompt was emptied by condition dropout give no text record.

    After ``warmup_epochs``, a sample whose larger robust z-score (median / MAD over the samples still in training)
    exceeds ``z_threshold`` gains a strike, and a normal epoch takes one away. Its loss weight is
    ``down_weight ** strikes``; at ``patience`` strikes it is dropped (weight 0 for the rest of training). At most
    ``max_drop_fraction`` of the samples are ever dropped. Every change is logged with the reason, and the whole
    table is written to ``output_file`` (JSON) after each epoch.

    The trainer (MONAI's ``SupervisedTrainer``) must use a :class:`SampleWeightedLoss` (the handler sets its
    weights at ``ITERATION_STARTED`` and reads its per-sample losses at ``ITERATION_COMPLETED``) and a
    :class:`monai_xreal.engines.LatentDiffusionPrepareBatch` (whose ``last_kwargs`` hold the step's timesteps and
    prompt embeddings); the batch must carry each sample's id under ``id_key``. Under DDP, each rank's records are
    gathered so every rank holds the same table. ``state_dict`` / ``load_state_dict`` let checkpoints resume it.

    Args:
        loss: the trainer's loss function.
        prepare_batch: the trainer's ``prepare_batch``.
        num_train_timesteps: the noise scheduler's training steps.
        id_key: batch key of the sample ids (a list of ``B`` strings after collation).
        text_probe: also track the text score (``2 * probe_draws`` more forward passes per batch, without gradient).
        probe_timesteps: ``(low, high)``: the text probe's timesteps are drawn from ``[low, high)``; ``None`` is
            ``(T // 10, T // 2)``: with little noise the image fixes the prediction, with much noise the prompt is
            not enough to tell two images apart (on the demo UNet a report's effect peaks at 20-50% of ``T``).
        probe_draws: noise draws per sample and iteration for the text score.
        warmup_epochs: epochs of scoring before any weight changes (the model must first fit the clean majority).
        z_threshold: robust z-score above which an epoch counts as anomalous.
        down_weight: weight factor per strike, in (0, 1).
        patience: strikes after which a sample is dropped.
        smoothing: weight of the newest epoch in the score's moving average, in (0, 1].
        timestep_bins: timestep bins for the loss normalisation.
        max_drop_fraction: cap on the fraction of samples dropped.
        output_file: where to write the table after each epoch (rank 0), or ``None``.
        logger_name: the logger; ``None`` is ``monai_xreal.noise_filter``.
    """

    # every DDP process attaches it (it sets the loss weights and gathers records across ranks), see
    # :func:`monai_xreal.engines.handlers_for_rank`
    every_rank = True

    def __init__(
        self,
        loss: SampleWeightedLoss,
        prepare_batch: LatentDiffusionPrepareBatch,
        num_train_timesteps: int = 1000,
        id_key: str = "id",
        text_probe: bool = True,
        probe_timesteps: Sequence[int] | None = None,
        probe_draws: int = 1,
        probe_references: int = 4,
        warmup_epochs: int = 5,
        z_threshold: float = 3.0,
        down_weight: float = 0.5,
        patience: int = 3,
        smoothing: float = 0.3,
        timestep_bins: int = 10,
        max_drop_fraction: float = 0.3,
        output_file: str | Path | None = None,
        logger_name: str | None = None,
    ) -> None:
        if not isinstance(loss, SampleWeightedLoss):
            raise TypeError(f"loss must be a SampleWeightedLoss, got {type(loss).__name__}")
        if not 0.0 < down_weight < 1.0 or not 0.0 < smoothing <= 1.0 or not 0.0 <= max_drop_fraction <= 1.0:
            raise ValueError("down_weight must lie in (0, 1), smoothing in (0, 1] and max_drop_fraction in [0, 1]")
        if min(patience, timestep_bins, probe_draws, probe_references) < 1 or warmup_epochs < 0:
            raise ValueError(
                "patience, timestep_bins, probe_draws and probe_references must be positive, warmup_epochs non-negative"
            )
        self.num_train_timesteps = int(num_train_timesteps)
        low, high = probe_timesteps or (self.num_train_timesteps // 10, self.num_train_timesteps // 2)
        if not 0 <= low < high <= self.num_train_timesteps:
            raise ValueError(f"probe_timesteps must satisfy 0 <= low < high <= {self.num_train_timesteps}")
        if getattr(prepare_batch, "train_text_encoder", False):
            raise XRealInputError("train_text_encoder", "the noise filter probes with cached prompt embeddings of a "
                                  "frozen text encoder; do not combine it with training the encoder")  # fmt: skip
        self.loss, self.prepare_batch = loss, prepare_batch
        self.id_key, self.text_probe = id_key, bool(text_probe)
        self.probe_timesteps, self.probe_draws = (int(low), int(high)), int(probe_draws)
        self.probe_references = int(probe_references)
        self.warmup_epochs, self.z_threshold = int(warmup_epochs), float(z_threshold)
        self.down_weight, self.patience, self.smoothing = float(down_weight), int(patience), float(smoothing)
        self.timestep_bins, self.max_drop_fraction = int(timestep_bins), float(max_drop_fraction)
        self.output_file = None if output_file is None else Path(output_file)
        self.logger = logging.getLogger(logger_name or "monai_xreal.noise_filter")
        self.samples: dict[str, SampleState] = {}
        self._loss_records: list[Record] = []
        self._text_records: list[Record] = []
        self._ids: list[str] = []
        self._prompts: list[str] = []
        self._recent_prompts: OrderedDict[str, None] = OrderedDict()  # the reference prompts, least recent first

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self.set_weights)
        if self.text_probe:
            engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.probe_text)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    # -- per iteration ---------------------------------------------------------------------------------------

    def _batch_ids(self, engine: Engine) -> list[str]:
        batch = engine.state.batch
        if not isinstance(batch, dict) or self.id_key not in batch:
            raise KeyError(f"LatentNoiseFilter: the batch has no {self.id_key!r} (keep it in the transforms' output)")
        ids = batch[self.id_key]
        return [str(i) for i in (ids if isinstance(ids, Sequence) and not isinstance(ids, str) else [ids])]

    def set_weights(self, engine: Engine) -> None:
        # read the batch now: MONAI's workflows decollate it into a list before ITERATION_COMPLETED handlers run
        self._ids = self._batch_ids(engine)
        self._prompts = [str(p) for p in engine.state.batch.get(self.prepare_batch.prompt_key, [""] * len(self._ids))]
        for prompt in filter(None, self._prompts):
            self._recent_prompts[prompt] = None
            self._recent_prompts.move_to_end(prompt)
        while len(self._recent_prompts) > _RECENT_PROMPTS:
            self._recent_prompts.popitem(last=False)
        weights = [self.samples[i].weight if i in self.samples else 1.0 for i in self._ids]
        self.loss.sample_weights = torch.tensor(weights, dtype=torch.float32)

    def reference_prompts(self, prompt: str) -> list[str]:
        """``probe_references`` distinct recently seen training prompts other than ``prompt`` (fewer while fewer have
        been seen; none for an empty prompt)."""
        others = [p for p in self._recent_prompts if p != prompt] if prompt else []
        return random.sample(others, min(self.probe_references, len(others)))

    @torch.no_grad()
    def probe_text(self, engine: Engine) -> None:
        """Text records of the batch: the own-prompt loss against the best reference-prompt loss on freshly noised
        latents, taken before the optimiser step changes the network."""
        latents = engine.state.output[Keys.IMAGE]
        kwargs = dict(self.prepare_batch.last_kwargs)
        for _ in range(self.probe_draws):
            references = [self.reference_prompts(p) for p in self._prompts]
            probed = [i for i, r in enumerate(references) if len(r) == self.probe_references]
            if not probed:
                return
            kwargs["noise"] = noise = self.prepare_batch.get_noise(latents)
            kwargs["timesteps"] = steps = torch.randint(*self.probe_timesteps, (len(latents),), device=latents.device)
            target = self.prepare_batch.get_target(latents, noise, steps)
            own = self._log_losses(engine, latents, target, kwargs)
            other = torch.full_like(own, math.inf)
            for m in range(self.probe_references):
                prompts = [r[m] if len(r) > m else "" for r in references]
                reference = {**kwargs, "condition": self.prepare_batch.embeddings(prompts, latents.device)}
                other = torch.minimum(other, self._log_losses(engine, latents, target, reference))
            steps, gaps, own = steps.tolist(), (own - other).tolist(), own.tolist()  # one device sync, not 3 per sample
            self._text_records += [(self._ids[i], steps[i], gaps[i]) for i in probed]
            self._loss_records += [(self._ids[i], steps[i], own[i]) for i in probed]

    def _log_losses(self, engine: Engine, latents: torch.Tensor, target: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """``(B,)`` log per-sample losses of the network's prediction with the inferer keyword arguments ``kwargs``."""
        prediction = engine.inferer(latents, engine.network, **kwargs)
        return self.loss.per_sample(prediction, target).clamp_min(1e-12).log()

    def record(self, engine: Engine) -> None:
        losses = self.loss.last_sample_losses
        if losses is None or "timesteps" not in self.prepare_batch.last_kwargs:
            raise RuntimeError("LatentNoiseFilter: the loss or the prepare_batch has not run on this batch")
        timesteps = self.prepare_batch.last_kwargs["timesteps"].tolist()
        for sample_id, step, value in zip(self._ids, timesteps, losses.tolist(), strict=True):
            self._loss_records.append((sample_id, int(step), _log(value)))

    # -- per epoch -------------------------------------------------------------------------------------------

    @staticmethod
    def _gathered(records: list[Record]) -> list[Record]:
        """Every rank's records (``ignite.distributed``: the records themselves in a single process)."""
        if idist.get_world_size() == 1:
            return records
        return [record for ranks_records in idist.all_gather(records) for record in ranks_records]

    def epoch_scores(self, records: Sequence[Record]) -> dict[str, float]:
        """Each sample's mean deviation of ``value`` from the median value in its timestep bin, over ``records``
        of ``(id, timestep, value)``."""
        if not records:
            return {}
        steps = np.array([r[1] for r in records])
        values = np.array([r[2] for r in records])
        bins = np.clip(steps * self.timestep_bins // self.num_train_timesteps, 0, self.timestep_bins - 1)
        medians = {b: np.median(values[bins == b]) for b in np.unique(bins)}
        residuals: dict[str, list[float]] = defaultdict(list)
        for (sample_id, _, value), b in zip(records, bins, strict=True):
            residuals[sample_id].append(value - medians[b])
        return {sample_id: float(np.mean(v)) for sample_id, v in residuals.items()}

    def epoch_completed(self, engine: Engine) -> None:
        self.update(self._gathered(self._loss_records), self._gathered(self._text_records), engine.state.epoch)
        self._loss_records, self._text_records = [], []
        if self.output_file is not None and idist.get_rank() == 0:
            self._write(engine.state.epoch)

    def update(self, loss_records: Sequence[Record], text_records: Sequence[Record], epoch: int) -> None:
        """Fold one epoch of records into the scores, then re-weight and drop.

        Args:
            loss_records: ``(id, timestep, log loss)`` of the training steps.
            text_records: ``(id, timestep, log own-prompt / reference-prompt loss)`` of the text probe.
            epoch: the epoch that just ended (weights change only after ``warmup_epochs``).
        """
        for name, records in (("score", loss_records), ("text_score", text_records)):
            for sample_id, value in self.epoch_scores(records).items():
                state = self.samples.setdefault(sample_id, SampleState())
                seen = state.epochs_seen.get(name, 0)
                previous = getattr(state, name)
                # the plain mean of the epochs so far until it would weigh the newest epoch less than `smoothing`
                rate = max(self.smoothing, 1.0 / (seen + 1))
                setattr(state, name, previous + rate * (value - previous))
                state.epochs_seen[name] = seen + 1
        active = {i: s for i, s in self.samples.items() if s.dropped_epoch is None}
        if epoch <= self.warmup_epochs or len(active) < 3:
            return
        z_scores = [_robust_z([s.score for s in active.values()])]
        if self.text_probe:
            z_scores.append(_robust_z([s.text_score for s in active.values()]))
        for state, z in zip(active.values(), np.max(z_scores, axis=0), strict=True):
            state.z = float(z)
            state.strikes = state.strikes + 1 if state.z > self.z_threshold else max(0, state.strikes - 1)
        may_drop = int(self.max_drop_fraction * len(self.samples)) - (len(self.samples) - len(active))
        due = sorted((i for i, s in active.items() if s.strikes >= self.patience), key=lambda i: -active[i].z)
        for sample_id in due[: max(0, may_drop)]:
            self._drop(sample_id, active[sample_id], epoch)
        for sample_id, state in active.items():
            weight = 0.0 if state.dropped_epoch is not None else self.down_weight ** min(state.strikes, self.patience)
            if weight != state.weight and state.dropped_epoch is None:
                change = "down-weighted" if weight < state.weight else "restored"
                self.logger.info(f"epoch {epoch}: {change} {sample_id} to {weight:.3g}: {self._why(state)}")
            state.weight = weight

    def _why(self, state: SampleState) -> str:
        text = f", {math.exp(state.text_score):.3f}x its loss with other prompts" if self.text_probe else ""
        return (f"loss {math.exp(state.score):.2f}x the timestep-matched median{text} (robust z {state.z:.1f}, "
                f"threshold {self.z_threshold:g}), anomalous {state.strikes} epoch(s) running")  # fmt: skip

    def _drop(self, sample_id: str, state: SampleState, epoch: int) -> None:
        state.dropped_epoch, state.reason = epoch, self._why(state)
        self.logger.warning(f"epoch {epoch}: dropped {sample_id}: {state.reason}")

    def _write(self, epoch: int) -> None:
        table = {"epoch": epoch, "dropped": self.dropped, "down_weighted": self.down_weighted,
                 "samples": {i: asdict(s) for i, s in sorted(self.samples.items())}}  # fmt: skip
        write_text_atomically(self.output_file, json.dumps(table, indent=2))

    # -- results and checkpoints -----------------------------------------------------------------------------

    @property
    def dropped(self) -> list[str]:
        """Ids of the dropped samples, in the order they were dropped."""
        dropped = [(s.dropped_epoch, i) for i, s in self.samples.items() if s.dropped_epoch is not None]
        return [i for _, i in sorted(dropped)]

    @property
    def down_weighted(self) -> list[str]:
        """Ids of the samples still in training with a weight below 1."""
        return sorted(i for i, s in self.samples.items() if s.dropped_epoch is None and s.weight < 1.0)

    def state_dict(self) -> dict:
        """The table, for ignite's ``Checkpoint``."""
        return {"samples": {i: asdict(s) for i, s in self.samples.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.samples = {i: SampleState(**s) for i, s in state["samples"].items()}


def _log(value: float) -> float:
    return math.log(max(value, 1e-12))


def _robust_z(values: Sequence[float]) -> np.ndarray:
    """``(x - median) / (1.4826 MAD)`` (scipy's normal-consistent MAD): a z-score that the outliers it looks for do
    not inflate."""
    values = np.asarray(values, dtype=np.float64)
    return (values - np.median(values)) / (median_abs_deviation(values, scale="normal") + 1e-12)
