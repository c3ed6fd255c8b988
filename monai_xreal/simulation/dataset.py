# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Paired training sets on disk: phantoms and radiographs simulated from a labelled CT, in one layout and datalist
format (every training config and the evaluation read either unchanged), resumable and shared over ``torchrun``
processes (:func:`monai_xreal.synthesis.paired_set.write_paired_set` writes both)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from monai_xreal.data.phantoms.generator import PhantomGenerator
from monai_xreal.simulation.simulator import RadiographSimulator

__all__ = ["write_phantom_set", "write_simulated_set"]


def write_simulated_set(
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
    **simulator_args,
) -> Path:
    """Write ``num`` simulated radiographs (``simulated_<index>``) and their datalists, or finish an interrupted
    run; returns the datalist's path. Layout and guarantees: :func:`monai_xreal.synthesis.paired_set.write_paired_set`.

    Args:
        simulator_args: :class:`RadiographSimulator` arguments (``ct``, ``labels``, ``structures``, ``spacing``,
            ``remove_contrast``, ``lung_shapes``, ``lung_masks``).

    Raises:
        XRealInputError: bad arguments or inputs, or ``output_dir`` holding another set.
    """
    from monai_xreal.synthesis.paired_set import write_paired_set

    simulator = RadiographSimulator(size=size, seed=seed, probabilities=probabilities, **simulator_args)
    settings = {
        "maker": "simulated radiographs", "size": [int(size), int(size)], "seed": int(seed),
        "probabilities": dict(simulator.probabilities), "ct": dict(simulator.ct.source),
        "lung_shapes": simulator.lung_shapes, "lung_masks": str(simulator_args.get("lung_masks") or "torchxrayvision"),
    }  # fmt: skip
    return write_paired_set(
        simulator, output_dir, num, settings, fmt, validation_fraction, name="simulated",
        description=f"monai_xreal simulated radiographs: {num} at {size}x{size} from {simulator.ct.source['ct']}, "
        f"seed {seed}", rank=rank, world_size=world_size, barrier=barrier, progress=progress,
    )  # fmt: skip


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
