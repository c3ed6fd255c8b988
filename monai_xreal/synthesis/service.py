# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The generation service: conditions and seeds in, images with their provenance out, in bounded memory.

``monai-xreal generate`` (and its ``--from-provenance`` replay), ``generate-dataset``, the MONAI Label task and the
bundle runner's inference all generate through :class:`GenerationService`: one place decides how seeds are batched
(the batch is part of how an image is made: kernels differ in the last bits between batch sizes), what a
provenance record holds, and how an image and its sidecar reach the disk (each complete or absent). Work is
streamed: a request of any size holds one batch of images at a time, and work already on disk is skipped, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path

import torch

from monai_xreal.errors import XRealInputError
from monai_xreal.io.hashing import sha256_array
from monai_xreal.pipeline.settings import SamplingSettings
from monai_xreal.synthesis.provenance import make_provenance
from monai_xreal.synthesis.writer import SyntheticImageWriter, WrittenImage

__all__ = ["Condition", "GenerationService", "Generated", "Sample", "batched"]


@dataclass(frozen=True)
class Condition:
    """What to generate from: masks as loaded (``(1, H, W)`` in reader order, or ``None``), the prompt, and their
    provenance records (:func:`~monai_xreal.synthesis.provenance.mask_record`; ``{"boxes": ...}`` for boxes)."""

    anatomy: torch.Tensor | None = None
    pathology: torch.Tensor | Sequence | None = None
    prompt: str = ""
    anatomy_record: Mapping | None = None
    pathology_record: Mapping | None = None
    extra: Mapping = field(default_factory=dict)  # recorded with every image of the condition (e.g. its report)


@dataclass(frozen=True)
class Sample:
    """One image to make: its seed, where it goes (``folder/stem`` + the format's extension) and what else its
    record holds (``extra``; e.g. a dataset's condition id and sample index). ``identity`` is its DICOM identity."""

    seed: int
    stem: str = ""
    folder: Path | None = None
    extra: Mapping = field(default_factory=dict)
    identity: object | None = None


@dataclass(frozen=True)
class Generated:
    """An image ``(1, H, W)`` in [0, 1], its provenance record and the sample it was made for."""

    image: torch.Tensor
    record: dict
    sample: Sample


def batched(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last may be shorter), drawn lazily."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class GenerationService:
    """Generate, record and write images with one pipeline and one set of sampling settings.

    Args:
        pipe: an :class:`~monai_xreal.XRealPipeline`.
        bundle: the bundle's :func:`~monai_xreal.synthesis.provenance.bundle_record`.
        settings: the resolved settings (:meth:`XRealPipeline.settings`).
        device: where the images are made (recorded).
        created: the time recorded in every record (``None``: none, as datasets, whose files must not depend on
            when they were made).
    """

    def __init__(
        self,
        pipe,
        bundle: Mapping,
        settings: SamplingSettings,
        device: torch.device | str,
        created: datetime | None = None,
    ) -> None:
        self.pipe = pipe
        self.bundle = dict(bundle)
        self.settings = settings
        self.device = torch.device(device)
        self.created = created

    def sample(self, condition: Condition, seeds: Sequence[int], callback=None) -> torch.Tensor:
        """``(len(seeds), 1, H, W)`` images of one condition in [0, 1], sample ``i`` drawn with ``seeds[i]``."""
        n = len(seeds)
        scheduler = self.settings.scheduler
        if scheduler == _scheduler_name(self.pipe.scheduler):
            scheduler = None  # the bundle's configured scheduler, not a new one of the same kind
        anatomy, pathology = condition.anatomy, condition.pathology
        if isinstance(pathology, torch.Tensor):
            pathology = pathology[None].expand(n, -1, -1, -1)
        elif pathology is not None:
            pathology = [pathology] * n  # one (N, 4) box array per sample
        images = self.pipe(
            anatomy=None if anatomy is None else anatomy[None].expand(n, -1, -1, -1),
            pathology=pathology,
            prompt=[condition.prompt] * n,
            scheduler=scheduler,
            seed=[int(s) for s in seeds],
            callback=callback,
            **self.settings.knobs(),
        )
        if not torch.isfinite(images).all():
            raise XRealInputError("bundle", "the networks produced NaN or infinite values")
        return images.as_tensor() if hasattr(images, "as_tensor") else images

    def record(self, condition: Condition, image: torch.Tensor, seeds: Sequence[int], index: int,
               extra: Mapping | None = None) -> dict:  # fmt: skip
        """The provenance record of sample ``index`` of a batch sampled with ``seeds``."""
        more = {"image_sha256": sha256_array(image), **condition.extra, **dict(extra or {})}
        return make_provenance(self.bundle, condition.prompt, condition.anatomy_record, condition.pathology_record,
                               self.settings.as_dict(), list(seeds), index, self.device, self.created,
                               extra=more)  # fmt: skip

    def generate(
        self,
        condition: Condition,
        batches: Iterable[Sequence[Sample]],
        done: Callable[[Sample], bool] = lambda sample: False,
        callback=None,
    ) -> Iterator[Generated]:
        """Each batch sampled together (all its seeds, so that every image is made as its record says) and each
        of its samples that is not ``done`` yielded with its record; a batch all done is not sampled."""
        for batch in batches:
            todo = [not done(sample) for sample in batch]
            if not any(todo):
                continue
            seeds = [sample.seed for sample in batch]
            images = self.sample(condition, seeds, callback)
            for index, (sample, image) in enumerate(zip(batch, images, strict=True)):
                if todo[index]:
                    yield Generated(image, self.record(condition, image, seeds, index, sample.extra), sample)

    @staticmethod
    def write(generated: Generated, writer: SyntheticImageWriter) -> WrittenImage:
        """The image and its sidecar into ``sample.folder`` (each file complete or absent)."""
        sample = generated.sample
        if sample.folder is None or not sample.stem:
            raise ValueError("a sample to write needs its folder and stem")
        return writer.write(generated.image, sample.folder, sample.stem, generated.record, sample.identity)


def _scheduler_name(scheduler) -> str:
    from monai_xreal.control import scheduler_name

    return scheduler_name(scheduler)
