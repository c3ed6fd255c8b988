# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The bundle runner's inference writes through the generation service: each image with its provenance sidecar."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from monai_xreal.io.formats import format_of_extension
from monai_xreal.synthesis.provenance import bundle_record, mask_record
from monai_xreal.synthesis.service import Condition, Generated, GenerationService, Sample
from monai_xreal.synthesis.writer import SyntheticImageWriter

__all__ = ["SyntheticImageSaver"]

logger = logging.getLogger(__name__)


class SyntheticImageSaver:
    """An ignite handler for the bundle's ``SupervisedEvaluator``: every generated image is written to
    ``output_dir/<condition id><ext>`` with its provenance sidecar (:class:`GenerationService`'s record and writer),
    and the run says where it writes.

    The evaluator's decollated ``batch`` items carry the condition (``anatomy`` / ``pathology`` as loaded, with their
    file names in the meta data, ``prompt``, ``seed``, ``id``) and its ``output`` items the image (``pred``).

    Args:
        pipeline: the bundle's :class:`~monai_xreal.XRealPipeline` (the one the inferer runs).
        output_dir: where the images go.
        bundle_root: the bundle folder (its weights' SHA-256s are recorded).
        output_ext: ``.png``, ``.nii.gz``, ``.nii`` or ``.dcm``.
        sampling: the knobs the inferer passes (``num_inference_steps``...; unset: the bundle's).
    """

    def __init__(
        self,
        pipeline,
        output_dir: str | Path,
        bundle_root: str | Path,
        output_ext: str = ".png",
        sampling: Mapping[str, float] | None = None,
    ) -> None:
        fmt = format_of_extension(output_ext)
        if fmt is None:
            raise ValueError(f"output_ext {output_ext!r} is not one of .png, .nii.gz, .nii, .dcm")
        self.pipeline, self.output_dir, self.bundle_root = pipeline, Path(output_dir), Path(bundle_root)
        self.writer = SyntheticImageWriter(fmt)
        self.sampling = dict(sampling or {})
        self.service: GenerationService | None = None
        self.written = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        pipe = self.pipeline
        settings = pipe.settings(None, **self.sampling)
        self.service = GenerationService(pipe, bundle_record(pipe, self.bundle_root), settings, pipe.device,
                                         datetime.now(timezone.utc))  # fmt: skip
        self.written = 0
        logger.info(f"writing generated images and their provenance sidecars to {self.output_dir.resolve()}")

    def __call__(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        seeds = [int(item["seed"]) for item in batch]
        for index, (item, result) in enumerate(zip(batch, output, strict=True)):
            extra = {"demographics": dict(item["demographics"])} if item.get("demographics") else {}
            condition = Condition(item.get("anatomy"), item.get("pathology"), item["prompt"],
                                  _record(item.get("anatomy")), _record(item.get("pathology")), extra)  # fmt: skip
            image = torch.as_tensor(result["pred"]).detach().cpu()
            record = self.service.record(condition, image, seeds, index, {"condition_id": item["id"]})
            sample = Sample(seeds[index], str(item["id"]), self.output_dir)
            self.service.write(Generated(image, record, sample), self.writer)
            self.written += 1

    def completed(self, engine: Engine) -> None:
        logger.info(f"wrote {self.written} image(s) and their provenance sidecars to {self.output_dir.resolve()}")


def _record(mask) -> dict | None:
    """The mask's record, naming its file when the loader kept it in the meta data."""
    if mask is None:
        return None
    name = getattr(mask, "meta", {}).get("filename_or_obj")
    return mask_record(name if name and Path(str(name)).is_file() else None, mask)
