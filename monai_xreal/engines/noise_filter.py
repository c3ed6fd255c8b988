# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Latent noise filtering (Diff-CXR): track each training pair's denoising loss, down-weight then drop outliers."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch import nn

from monai_xreal.engines.diffusion import LatentDiffusionPrepareBatch

__all__ = ["SampleWeightedLoss", "SampleState", "LatentNoiseFilter"]


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

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_sample = self.loss(pred, target).flatten(1).mean(1)
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
    log-ratio of its loss with its prompt to its loss with the empty prompt (same noise and timestep), relative to
    the median at the same timesteps; ``z``: the larger robust z-score of the two among the samples still in
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

    Two scores are tracked per sample, each smoothed over epochs (exponential moving average, ``smoothing``):

    - the loss score: a diffusion loss depends strongly on the timestep, so each sample's loss is compared with
      the median loss of all samples at similar timesteps in the same epoch (``timestep_bins`` equal bins), as a
      log-ratio. Images unlike the rest (corrupt, another modality, mis-stored) stay high.
    - the text score (``text_probe``): the same latent, noise and timestep denoised once more with the empty
      prompt (no gradient, before the optimiser step), and the log-ratio of the conditional to the unconditional
      loss, minus its median at similar timesteps. A report that does not describe its image makes the
      conditional prediction worse than the unconditional one; this cancels how hard the image itself is, which
      varies far more between samples than a report's effect on the loss. Samples whose prompt was emptied by
      condition dropout give no text record.

    After ``warmup_epochs``, a sample whose larger robust z-score (median / MAD over the samples still in training)
    exceeds ``z_threshold`` gains a strike, and a normal epoch takes one away. Its loss weight is
    ``down_weight ** strikes``; at ``patience`` strikes it is dropped (weight 0 for the rest of training). At most
    ``max_drop_fraction`` of the samples are ever dropped. Every change is logged with the reason, and the whole
    table is written to ``output_file`` (JSON) after each epoch.

    The trainer (MONAI's ``SupervisedTrainer``) must use a :class:`SampleWeightedLoss` (the handler sets its
    weights at ``ITERATION_STARTED`` and reads its per-sample losses at ``ITERATION_COMPLETED``) and a
    :class:`monai_xreal.engines.LatentDiffusionPrepareBatch` (whose ``last_kwargs`` hold the drawn noise and
    timesteps); the batch must carry each sample's id under ``id_key``. Under DDP, each rank's records are
    gathered so every rank holds the same table. ``state_dict`` / ``load_state_dict`` let checkpoints resume it.

    Args:
        loss: the trainer's loss function.
        prepare_batch: the trainer's ``prepare_batch``.
        num_train_timesteps: the noise scheduler's training steps.
        id_key: batch key of the sample ids (a list of ``B`` strings after collation).
        text_probe: also track the text score (one more forward pass per batch, without gradient).
        probe_min_timestep: the text score ignores timesteps below this (``None``: a fifth of
            ``num_train_timesteps``): with little noise the image fixes the prediction and the prompt barely counts.
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

    def __init__(
        self,
        loss: SampleWeightedLoss,
        prepare_batch: LatentDiffusionPrepareBatch,
        num_train_timesteps: int = 1000,
        id_key: str = "id",
        text_probe: bool = True,
        probe_min_timestep: int | None = None,
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
        if patience < 1 or warmup_epochs < 0 or timestep_bins < 1:
            raise ValueError("patience and timestep_bins must be positive and warmup_epochs non-negative")
        self.loss, self.prepare_batch = loss, prepare_batch
        self.num_train_timesteps = int(num_train_timesteps)
        self.id_key, self.text_probe = id_key, bool(text_probe)
        self.probe_min_timestep = self.num_train_timesteps // 5 if probe_min_timestep is None else probe_min_timestep
        self.warmup_epochs, self.z_threshold = int(warmup_epochs), float(z_threshold)
        self.down_weight, self.patience, self.smoothing = float(down_weight), int(patience), float(smoothing)
        self.timestep_bins, self.max_drop_fraction = int(timestep_bins), float(max_drop_fraction)
        self.output_file = None if output_file is None else Path(output_file)
        self.logger = logging.getLogger(logger_name or "monai_xreal.noise_filter")
        self.samples: dict[str, SampleState] = {}
        self._records: list[tuple[str, int, float, float | None]] = []
        self._ids: list[str] = []
        self._prompts: list[str] = []
        self._unconditional: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self.set_weights)
        if self.text_probe:
            engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.probe_unconditional)
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
        weights = [self.samples[i].weight if i in self.samples else 1.0 for i in self._ids]
        self.loss.sample_weights = torch.tensor(weights, dtype=torch.float32)

    @torch.no_grad()
    def probe_unconditional(self, engine: Engine) -> None:
        """The batch's per-sample losses with the empty prompt, before the optimiser step changes the network."""
        kwargs = dict(self.prepare_batch.last_kwargs)
        inputs, targets = engine.state.output[Keys.IMAGE], engine.state.output[Keys.LABEL]
        kwargs["condition"] = self.prepare_batch.embeddings([""] * inputs.shape[0], inputs.device)
        prediction = engine.inferer(inputs, engine.network, **kwargs)
        self._unconditional = self.loss.loss(prediction, targets).flatten(1).mean(1)

    def record(self, engine: Engine) -> None:
        losses = self.loss.last_sample_losses
        if losses is None or "timesteps" not in self.prepare_batch.last_kwargs:
            raise RuntimeError("LatentNoiseFilter: the loss or the prepare_batch has not run on this batch")
        timesteps = self.prepare_batch.last_kwargs["timesteps"].tolist()
        unconditional = self._unconditional.tolist() if self._unconditional is not None else [None] * len(self._ids)
        rows = zip(self._ids, timesteps, losses.tolist(), unconditional, self._prompts, strict=True)
        for sample_id, step, value, plain, prompt in rows:
            probed = plain is not None and prompt and step >= self.probe_min_timestep
            gain = _log(value) - _log(plain) if probed else None
            self._records.append((sample_id, int(step), _log(value), gain))
        self._unconditional = None

    # -- per epoch -------------------------------------------------------------------------------------------

    def _gathered_records(self) -> list[tuple[str, int, float]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._records
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, self._records)
        return [record for records in everyone for record in records]

    def epoch_scores(self, records: Sequence[tuple[str, int, float | None]]) -> dict[str, float]:
        """Each sample's mean deviation of ``value`` from the median value in its timestep bin, over ``records``
        of ``(id, timestep, value)`` (records whose value is ``None`` are left out)."""
        records = [r for r in records if r[2] is not None]
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
        self.update(self._gathered_records(), engine.state.epoch)
        self._records = []
        if self.output_file is not None and not (dist.is_available() and dist.is_initialized() and dist.get_rank()):
            self._write(engine.state.epoch)

    def update(self, records: Sequence[tuple[str, int, float, float | None]], epoch: int) -> None:
        """Fold one epoch of ``(id, timestep, log loss, log conditional / unconditional loss or None)`` records
        into the scores, then re-weight and drop."""
        for name, column in (("score", 2), ("text_score", 3)):
            for sample_id, value in self.epoch_scores([(r[0], r[1], r[column]) for r in records]).items():
                state = self.samples.setdefault(sample_id, SampleState())
                seen = state.epochs_seen.get(name, 0)
                previous = getattr(state, name)
                setattr(state, name, value if seen == 0 else previous + self.smoothing * (value - previous))
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
        text = f", {math.exp(state.text_score):.3f}x its empty-prompt loss" if self.text_probe else ""
        return (f"loss {math.exp(state.score):.2f}x the timestep-matched median{text} (robust z {state.z:.1f}, "
                f"threshold {self.z_threshold:g}), anomalous {state.strikes} epoch(s) running")  # fmt: skip

    def _drop(self, sample_id: str, state: SampleState, epoch: int) -> None:
        state.dropped_epoch, state.reason = epoch, self._why(state)
        self.logger.warning(f"epoch {epoch}: dropped {sample_id}: {state.reason}")

    def _write(self, epoch: int) -> None:
        table = {"epoch": epoch, "dropped": self.dropped, "down_weighted": self.down_weighted,
                 "samples": {i: asdict(s) for i, s in sorted(self.samples.items())}}  # fmt: skip
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.output_file.parent, prefix=f".{self.output_file.name}.")
        with os.fdopen(handle, "w") as stream:
            json.dump(table, stream, indent=2)
        os.replace(temporary, self.output_file)

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
    """``(x - median) / (1.4826 MAD)``: a z-score that the outliers it looks for do not inflate."""
    values = np.asarray(values, dtype=np.float64)
    median = np.median(values)
    return (values - median) / (1.4826 * np.median(np.abs(values - median)) + 1e-12)
