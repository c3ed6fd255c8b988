# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The training protocols of a synthetic-data utility study, as data: what each trains on and from what weights.

The four protocols the field reports (real only; real plus synthetic at several ratios; synthetic only; synthetic
pre-training then real fine-tuning) are four kinds; a mixed protocol exists once per ratio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monai_xreal.errors import XRealInputError

__all__ = ["PROTOCOL_KINDS", "Protocol", "build_protocols"]

PROTOCOL_KINDS = ("real", "mixed", "synthetic", "finetune")
_DESCRIPTIONS = {
    "real": "real images only",
    "mixed": "real images plus {ratio:g} synthetic image(s) per real image",
    "synthetic": "synthetic images only (all of them)",
    "finetune": "pre-trained on the synthetic images (the synthetic run of the same seed), then fine-tuned on the "
    "real images",
}


@dataclass(frozen=True)
class Protocol:
    """One training protocol.

    Attributes:
        name: the report's key and the run folder's name (``real``, ``mixed_0.5``, ``synthetic``, ``finetune``).
        kind: one of :data:`PROTOCOL_KINDS`.
        ratio: ``mixed`` only: synthetic images added per real image.
    """

    name: str
    kind: str
    ratio: float | None = None

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self.kind].format(ratio=self.ratio or 0.0)

    @property
    def pretrain(self) -> str | None:
        """The protocol whose run (of the same seed) gives the initial weights: ``synthetic`` for ``finetune``."""
        return "synthetic" if self.kind == "finetune" else None

    def num_synthetic(self, num_real: int, num_synthetic: int) -> int:
        """How many synthetic images a run of this protocol trains on."""
        if self.kind == "mixed":
            return int(round(float(self.ratio) * num_real))
        return num_synthetic if self.kind == "synthetic" else 0

    def training_items(self, real: Sequence[dict], synthetic: Sequence[dict], seed: int) -> list[dict]:
        """The training items of this protocol's run ``seed``, each tagged with its ``source``.

        A mixed run takes all real images and ``round(ratio * len(real))`` synthetic ones drawn without
        replacement with ``seed`` (a different draw for each seed and ratio).

        Raises:
            XRealInputError: the synthetic set is smaller than the ratio needs.
        """
        real_items = [{**item, "source": "real"} for item in real]
        synthetic_items = [{**item, "source": "synthetic"} for item in synthetic]
        if self.kind in ("real", "finetune"):
            return real_items
        if self.kind == "synthetic":
            return synthetic_items
        count = self.num_synthetic(len(real), len(synthetic))
        if count > len(synthetic):
            raise XRealInputError(
                "--ratios", f"ratio {self.ratio:g} needs {count} synthetic images ({self.ratio:g} x {len(real)} real); "
                f"the synthetic set has {len(synthetic)}",
            )  # fmt: skip
        rng = np.random.default_rng([int(seed), int(round(float(self.ratio) * 1e6))])
        chosen = sorted(rng.choice(len(synthetic), size=count, replace=False).tolist())
        return real_items + [synthetic_items[i] for i in chosen]


def build_protocols(kinds: Sequence[str] = PROTOCOL_KINDS, ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> list[Protocol]:
    """The protocols of ``kinds`` (in :data:`PROTOCOL_KINDS` order), ``mixed`` once per ratio (ascending).

    Raises:
        XRealInputError: an unknown kind, no kind, a ratio that is not positive, or ``mixed`` without ratios.
    """
    unknown = sorted(set(kinds) - set(PROTOCOL_KINDS))
    if unknown:
        raise XRealInputError("--protocols", f"unknown protocol(s) {unknown}; choose from {list(PROTOCOL_KINDS)}")
    if not kinds:
        raise XRealInputError("--protocols", "name at least one protocol")
    bad = [r for r in ratios if not (isinstance(r, (int, float)) and np.isfinite(r) and r > 0)]
    if bad:
        raise XRealInputError("--ratios", f"ratios must be positive numbers, got {bad}")
    if "mixed" in kinds and not ratios:
        raise XRealInputError("--ratios", "the mixed protocol needs at least one ratio")
    protocols = []
    for kind in PROTOCOL_KINDS:
        if kind not in kinds:
            continue
        if kind == "mixed":
            protocols += [Protocol(f"mixed_{r:g}", kind, float(r)) for r in sorted({float(r) for r in ratios})]
        else:
            protocols.append(Protocol(kind, kind))
    return protocols
