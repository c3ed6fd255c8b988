# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Sampling recipes compared by the benchmark: XReal's reference and this project's fast settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["FAST_RECIPE", "REFERENCE_RECIPE", "SamplingRecipe"]


@dataclass(frozen=True)
class SamplingRecipe:
    """How to sample, apart from the conditions and the control knobs (guidance, blending), which stay the bundle's.

    Attributes:
        name: a short label for the table.
        num_inference_steps: reverse steps per stage.
        scheduler: ``"ddim"``, ``"pndm"``, ``"ddpm"``.
        eta: DDIM noise weight.
        batched_guidance: both guidance branches in one UNet call.
        batch_size: images per pipeline call.
    """

    name: str
    num_inference_steps: int
    scheduler: str = "ddim"
    eta: float = 1.0
    batched_guidance: bool = True
    batch_size: int = 1

    def pipeline_kwargs(self) -> dict:
        """The keyword arguments of an :class:`~monai_xreal.XRealPipeline` call."""
        return {"num_inference_steps": self.num_inference_steps, "scheduler": self.scheduler, "eta": self.eta,
                "batched_guidance": self.batched_guidance}  # fmt: skip

    def with_batch(self, batch_size: int) -> SamplingRecipe:
        return replace(self, batch_size=batch_size)

    def as_dict(self) -> dict:
        return asdict(self)


REFERENCE_RECIPE = SamplingRecipe("xreal-reference", 100, "ddim", 1.0, batched_guidance=False, batch_size=1)
"""XReal's release: 100 DDIM steps per stage, eta 1, the two guidance branches as separate UNet calls, batch 1."""

FAST_RECIPE = SamplingRecipe("fast", 20, "ddim", 1.0, batched_guidance=True, batch_size=8)
"""Fewer steps (chosen where adherence holds, see ``docs/benchmarks.md``), batched guidance, batches of 8."""

VARIANT_NAMES = ("fp32", "bf16-autocast", "channels-last", "torch-compile", "sdpa-attention", "eager-attention")
"""The UNet execution variants :data:`monai_xreal.benchmark.runner.VARIANTS` measures (named here, where ``--help``
reads them without loading torch)."""
