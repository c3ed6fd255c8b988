# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Phantoms as a MONAI dataset (made on the fly) and as files with a MONAI datalist (``{"training", "validation"}``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path


from monai_xreal.data.phantoms.generator import PhantomGenerator
from monai_xreal.data.paired import PAIRED_FOLDERS, PairedDataset, paired_item

__all__ = ["PhantomDataset", "phantom_item", "write_phantom_set", "PHANTOM_FOLDERS"]

PHANTOM_FOLDERS = PAIRED_FOLDERS
phantom_item = paired_item  # a phantom's datalist fields are any paired sample's


class PhantomDataset(PairedDataset):
    """``num`` phantoms made when indexed (no files), as data dicts with ``image``, ``anatomy``, ``pathology``
    (``(1, X, Y)`` numpy arrays in MONAI order) and the fields of :func:`phantom_item`.

    Args:
        num: number of phantoms.
        transform: MONAI transform applied to each dict.
        per_finding: include the per-finding fields; they vary in length, so the default batching cannot stack them.
        **generator_args: :class:`PhantomGenerator` arguments (``size``, ``seed``, ``probabilities``, ...).
    """

    def __init__(
        self, num: int, transform: Callable | None = None, per_finding: bool = False, **generator_args
    ) -> None:
        super().__init__(PhantomGenerator(**generator_args), num, transform, per_finding, name="phantom")
        self.generator = self.maker


def write_phantom_set(
    output_dir: str | Path,
    num: int,
    size: int = 128,
    seed: int = 0,
    fmt: str = "png",
    validation_fraction: float = 0.1,
    probabilities: Mapping[str, float] | None = None,
    progress: bool = False,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    **generator_args,
) -> Path:
    """Write ``num`` phantoms and their datalist (or finish an interrupted run); returns the datalist's path.

    The layout and guarantees are :func:`monai_xreal.synthesis.paired_set.write_paired_set`'s: ``images/``,
    ``anatomy/`` and ``pathology/`` hold ``phantom_<index>.<png|nii.gz>``, ``datalist.json`` is MONAI's
    ``{"training", "validation"}``, ``conditions.json`` the validation phantoms as conditions (seed = index); each
    phantom's files are complete or absent, and the same call again finishes what a killed run left.

    Raises:
        XRealInputError: bad arguments, or ``output_dir`` holding another set.
    """
    from monai_xreal.synthesis.paired_set import write_paired_set

    generator = PhantomGenerator(size=size, seed=seed, probabilities=probabilities, **generator_args)
    settings = {"maker": "phantoms", "size": [int(size), int(size)], "seed": int(seed),
                "probabilities": dict(generator.probabilities),
                "sources": {k: None if v is None else str(v) for k, v in generator_args.items()}}  # fmt: skip
    return write_paired_set(
        generator, output_dir, num, settings, fmt, validation_fraction, name="phantom",
        description=f"monai_xreal phantoms: {num} at {size}x{size}, seed {seed}", rank=rank,
        world_size=world_size, barrier=barrier, progress=progress,
    )  # fmt: skip
