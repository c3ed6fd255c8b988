# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""One run of a utility study: a protocol trained with one seed, its finished result, and its test predictions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_xreal.utility.protocols import Protocol

__all__ = ["RUN_SCHEMA", "UtilityRun", "predict", "spec_digest"]

RUN_SCHEMA = "monai_xreal.utility_run/1"


def spec_digest(value: Any) -> str:
    """The SHA-256 of a JSON-able value (what a run was made from, compared on a rerun)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class UtilityRun:
    """One protocol trained with one seed.

    Attributes:
        protocol: what it trains on.
        seed: the bundle's ``seed`` (determinism, and which synthetic images a mixed run draws).
        folder: its output folder.
        training: its training items (``image``, ``labels`` over the study's classes, ``source``).
        spec: what makes it (compared with ``spec.json`` / ``result.json`` on a rerun).
        pretrain: the run whose ``model.pt`` it starts from (fine-tuning).
    """

    protocol: Protocol
    seed: int
    folder: Path
    training: tuple[dict, ...]
    spec: dict
    pretrain: UtilityRun | None = None

    @property
    def name(self) -> str:
        return f"{self.protocol.name}/seed_{self.seed}"

    @property
    def model_path(self) -> Path:
        return self.folder / "model.pt"

    @property
    def result_path(self) -> Path:
        return self.folder / "result.json"

    def result(self) -> dict | None:
        """The finished run's result (``result.json`` for this very spec, with its ``model.pt``), or ``None``."""
        if not (self.result_path.is_file() and self.model_path.is_file()):
            return None
        try:
            result = json.loads(self.result_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return result if result.get("spec") == self.spec else None

    def num_training(self) -> dict[str, int]:
        return {source: sum(item["source"] == source for item in self.training) for source in ("real", "synthetic")}


def predict(workflow) -> tuple[np.ndarray, np.ndarray]:
    """``utility.json``'s ``test#evaluator`` over the test list: ``(N, L)`` probabilities and labels in order."""
    from ignite.engine import Events
    from monai.handlers import from_engine

    evaluator = workflow.parser.get_parsed_content("test#evaluator")
    predictions, labels = [], []

    @evaluator.on(Events.ITERATION_COMPLETED)
    def _collect(engine) -> None:
        pred, label = from_engine(["pred", "label"])(engine.state.output)
        predictions.extend(p.detach().float().cpu() for p in pred)
        labels.extend(y.detach().float().cpu() for y in label)

    evaluator.run()
    return torch.stack(predictions).numpy().astype(np.float64), torch.stack(labels).numpy().astype(np.int64)
