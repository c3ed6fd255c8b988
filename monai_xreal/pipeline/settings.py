# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The sampling knobs: one definition of each (name, default, range, help), read by every front end.

The pipeline (:meth:`XRealPipeline.settings`), the command line (``--num-inference-steps`` ...), the MONAI Label
task's request parameters, the provenance records and the bundle's ``sampling_defaults`` all take their names,
defaults, ranges and help text from :data:`KNOBS`. This module imports nothing heavy, so ``--help`` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

from monai_xreal.errors import XRealInputError

__all__ = ["EDIT_KNOBS", "KNOBS", "SCHEDULER_NAMES", "XREAL_SAMPLING", "Knob", "SamplingSettings"]

SCHEDULER_NAMES = ("ddim", "ddpm", "pndm")
"""The samplers a call may name (``monai_xreal.control.SCHEDULERS`` maps them to MONAI classes)."""


@dataclass(frozen=True)
class Knob:
    """One sampling knob.

    Attributes:
        name: the pipeline's keyword (``num_inference_steps``); the CLI option is ``--`` + name with dashes.
        kind: ``int``, ``float`` or ``str`` (then one of ``choices``).
        default: XReal's published value.
        low, high: the accepted closed range (``None``: unbounded).
        help: one line for ``--help`` and the Label task's documentation.
        alias: the short request key of the MONAI Label task (``steps``), when it has one.
    """

    name: str
    kind: type
    default: float | str
    low: float | None
    high: float | None
    help: str
    alias: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value) -> int | float | str:
        """``value`` as this knob's type, or an :class:`XRealInputError` naming the knob."""
        if self.kind is str:
            if value not in self.choices:
                raise XRealInputError(self.name, f"must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        kind = "an integer" if self.kind is int else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise XRealInputError(self.name, f"must be {kind}, got {value!r}")
        if not math.isfinite(value) or (self.kind is int and value != int(value)):
            raise XRealInputError(self.name, f"must be {kind}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            high = "inf" if self.high is None else self.high
            raise XRealInputError(self.name, f"{value!r} is outside [{self.low}, {high}]")
        return self.kind(value)


KNOBS: tuple[Knob, ...] = (
    Knob("num_inference_steps", int, 100, 1, 1000, "reverse steps per stage", alias="steps"),
    Knob("guidance_scale", float, 7.0, 0.0, 100.0, "classifier-free guidance weight on the prompt", alias="guidance"),
    Knob("anatomy_soft_value", float, 0.2, 0.0, 1.0, "anatomy blending weight outside the organs"),
    Knob("anatomy_step_fraction", float, 0.5, 0.0, 1.0, "share of the steps, from the start, with anatomy blending"),
    Knob("eta", float, 1.0, 0.0, None, "DDIM noise weight (0: deterministic DDIM)"),
    Knob(
        "blending",
        str,
        "noise",
        None,
        None,
        "how known regions are held: 'noise' (XReal: the known latent, noised "
        "afresh, pasted before each step) or 'data' (in the model's clean estimate, consistent with the solver: "
        "holds at a few steps)",
        choices=("noise", "data"),
    ),
    Knob(
        "anatomy_num_inference_steps",
        int,
        0,
        0,
        1000,
        "reverse steps of the anatomy stage when a pathology " "stage follows (0: num_inference_steps)",
    ),
    Knob(
        "pathology_feather",
        float,
        0.0,
        0.0,
        64.0,
        "composite the finding into the anatomy image after decoding, "
        "with a Gaussian edge of this sigma in pixels (0: no compositing, XReal's latent blending alone)",
    ),
)
_BY_NAME = {knob.name: knob for knob in KNOBS}

EDIT_KNOBS: tuple[str, ...] = ("num_inference_steps", "guidance_scale", "eta", "blending", "pathology_feather")
"""The knobs an edit of a radiograph reads (:meth:`XRealPipeline.edit`: the pathology stage alone)."""

XREAL_SAMPLING: dict[str, float | str] = {knob.name: knob.default for knob in KNOBS}
"""XReal's published values; a bundle tunes them for its weights (``pipeline#sampling_defaults``)."""


@dataclass(frozen=True)
class SamplingSettings:
    """Every knob of one generation, resolved and checked (what provenance records and replays read).

    Build it with :meth:`resolve` from a bundle's defaults and a call's choices; ``scheduler`` is a name of
    :data:`SCHEDULER_NAMES` or another scheduler's class name.
    """

    num_inference_steps: int = 100
    guidance_scale: float = 7.0
    anatomy_soft_value: float = 0.2
    anatomy_step_fraction: float = 0.5
    eta: float = 1.0
    blending: str = "noise"
    anatomy_num_inference_steps: int = 0
    pathology_feather: float = 0.0
    scheduler: str = "ddim"

    @property
    def anatomy_steps(self) -> int:
        """Reverse steps of the anatomy stage when a pathology stage follows."""
        return self.anatomy_num_inference_steps or self.num_inference_steps

    def __post_init__(self) -> None:
        for knob in KNOBS:
            object.__setattr__(self, knob.name, knob.check(getattr(self, knob.name)))

    @classmethod
    def resolve(
        cls, defaults: Mapping[str, float] | None = None, scheduler: str = "ddim", **choices: float | None
    ) -> SamplingSettings:
        """``defaults`` (XReal's for knobs it lacks) overridden by each choice that is not ``None``.

        Raises:
            XRealInputError: an unknown knob, or a value of the wrong type or out of range (named).
        """
        values = {**XREAL_SAMPLING, **check_defaults(defaults or {})}
        unknown = set(choices) - set(values)
        if unknown:
            raise XRealInputError("sampling", f"unknown knob(s) {sorted(unknown)}; known: {sorted(XREAL_SAMPLING)}")
        values |= {name: value for name, value in choices.items() if value is not None}
        return cls(**values, scheduler=scheduler)

    def for_anatomy_stage(self) -> SamplingSettings:
        """The settings of an anatomy stage followed by a pathology stage (its own step count)."""
        return replace(self, num_inference_steps=self.anatomy_steps)

    def knobs(self) -> dict[str, float]:
        """The knobs as the pipeline's keyword arguments (without the scheduler)."""
        return {knob.name: getattr(self, knob.name) for knob in KNOBS}

    def as_dict(self) -> dict:
        """Every setting, scheduler included (the provenance record's ``sampling`` fields)."""
        return asdict(self)

    def with_scheduler(self, scheduler: str) -> SamplingSettings:
        return replace(self, scheduler=scheduler)

    @classmethod
    def from_record(cls, record: Mapping) -> SamplingSettings:
        """The settings a provenance record's ``sampling`` holds (extra keys such as the seed are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


def check_defaults(defaults: Mapping[str, float]) -> dict[str, float]:
    """A bundle's ``sampling_defaults``, each knob known and in range."""
    unknown = set(defaults) - set(_BY_NAME)
    if unknown:
        raise XRealInputError("sampling_defaults", f"unknown knob(s) {sorted(unknown)}; known: {sorted(_BY_NAME)}")
    return {name: _BY_NAME[name].check(value) for name, value in defaults.items()}


def knob(name: str) -> Knob:
    """The knob called ``name`` (its pipeline keyword)."""
    return _BY_NAME[name]
