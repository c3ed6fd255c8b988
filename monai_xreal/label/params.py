# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The request parameters of the ``xreal_generate`` infer task, checked before any work is done.

MONAI Label hands an infer task one flat dict: its own keys (``model``, ``image``, ``device``, ``client_id``...),
the task's config and the client's ``params`` JSON. Only the keys below are read; the rest belong to MONAI Label
or its clients and are left alone. Values may arrive as JSON numbers or as strings (viewers send their config
fields as text); anything that is not a number where a number is due is refused, naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from monai_xreal.errors import XRealInputError
from monai_xreal.io.formats import IMAGE_FORMATS
from monai_xreal.pipeline.settings import KNOBS, SCHEDULER_NAMES, Knob
from monai_xreal.seeding import MAX_SEED, draw_seed
from monai_xreal.text.demographics import DEMOGRAPHIC_FIELDS, Demographics, with_demographics

__all__ = ["RESULT_EXTENSIONS", "GenerateLimits", "GenerateParams", "RequestTooLarge"]

RESULT_EXTENSIONS = {ext: name for name, ext in IMAGE_FORMATS.items()}  # extension -> writer format


class RequestTooLarge(XRealInputError):
    """A request beyond the server's limits (upload bytes, image side, number of boxes, prompt length)."""


@dataclass(frozen=True)
class GenerateLimits:
    """What one ``xreal_generate`` request may ask for; a server sets them with ``--conf`` (see the app).

    Args:
        max_upload_mb: largest uploaded anatomy or pathology file.
        max_image_size: largest side, in pixels, of an anatomy or pathology map.
        max_steps: most reverse steps per stage.
        max_boxes: most pathology boxes.
        max_prompt_chars: longest prompt.
    """

    max_upload_mb: float = 64.0
    max_image_size: int = 4096
    max_steps: int = 1000
    max_boxes: int = 64
    max_prompt_chars: int = 2000

    @classmethod
    def from_conf(cls, conf: Mapping[str, str]) -> GenerateLimits:
        """Limits from MONAI Label's ``--conf`` strings (``max_upload_mb``, ``max_image_size``...)."""
        defaults = cls()
        values = {}
        for name, default in asdict(defaults).items():
            if name in conf:
                integer = isinstance(default, int)
                values[name] = _number(conf[name], name, integer=integer, low=1 if integer else None)
                if values[name] <= 0:
                    raise XRealInputError(name, f"must be positive, got {conf[name]!r}")
        return cls(**values)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass(frozen=True)
class GenerateParams:
    """One generation request, with every default filled in (what the response echoes).

    ``steps`` / ``guidance`` / ``eta`` / ``anatomy_soft_value`` / ``anatomy_step_fraction`` / ``scheduler`` left
    ``None`` take the bundle's sampling defaults. ``boxes`` are ``(x_min, y_min, x_max, y_max)`` in the anatomy
    map's pixels along MONAI's reader axes (see ``BoxesToMask``). ``seed`` is drawn and echoed when not given, so
    every response says how to reproduce it. ``demographics`` (``sex``, ``age``, ``race``, ``view``, given flat or
    as one ``demographics`` object) are checked and go before the prompt
    (:class:`~monai_xreal.text.demographics.Demographics`).
    """

    prompt: str = ""
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    eta: float | None = None
    anatomy_soft_value: float | None = None
    anatomy_step_fraction: float | None = None
    blending: str | None = None
    anatomy_num_inference_steps: int | None = None
    pathology_feather: float | None = None
    scheduler: str | None = None
    boxes: list[list[float]] = field(default_factory=list)
    demographics: dict = field(default_factory=dict)
    output_grid: str = "input"
    result_extension: str = ".nii.gz"

    # parameter -> accepted request keys (the short name first; the pipeline's own name also works)
    ALIASES = {knob.alias: (knob.alias, knob.name) for knob in KNOBS if knob.alias}

    @classmethod
    def from_request(cls, request: Mapping, limits: GenerateLimits | None = None) -> GenerateParams:
        """Read and check the parameters of a MONAI Label infer request.

        Raises:
            XRealInputError: a value of the wrong type or out of range, naming the parameter.
            RequestTooLarge: more boxes or a longer prompt than ``limits`` allow.
        """
        limits = limits or GenerateLimits()
        get = _Getter(request, cls.ALIASES)
        prompt = get("prompt", "")
        if not isinstance(prompt, str):
            raise XRealInputError("prompt", f"must be text, got {type(prompt).__name__}")
        if len(prompt) > limits.max_prompt_chars:
            raise RequestTooLarge(
                "prompt", f"{len(prompt)} characters; this server takes at most {limits.max_prompt_chars}"
            )
        seed = get("seed", None)
        scheduler = get("scheduler", None)
        if scheduler is not None and scheduler not in SCHEDULER_NAMES:
            raise XRealInputError(
                "scheduler", f"unknown scheduler {scheduler!r}; choose from {sorted(SCHEDULER_NAMES)}"
            )
        output_grid = get("output_grid", "input")
        if output_grid not in ("input", "model"):
            raise XRealInputError("output_grid", f"must be 'input' or 'model', got {output_grid!r}")
        extension = get("result_extension", None) or ".nii.gz"
        if extension not in RESULT_EXTENSIONS:
            raise XRealInputError("result_extension", f"{extension!r} is not one of {sorted(RESULT_EXTENSIONS)}")
        return cls(
            prompt=prompt,
            seed=draw_seed() if seed is None else _number(seed, "seed", integer=True, low=0, high=MAX_SEED),
            **{knob.alias or knob.name: _knob(get(knob.alias or knob.name, None), knob, limits) for knob in KNOBS},
            scheduler=scheduler,
            boxes=_boxes(get("boxes", None), limits.max_boxes),
            demographics=_demographics(request),
            output_grid=output_grid,
            result_extension=extension,
        )

    @property
    def model_prompt(self) -> str:
        """The prompt the model is given: the demographics' text, then the prompt."""
        return with_demographics(self.prompt, Demographics.from_mapping(self.demographics or None))

    def echo(self) -> dict:
        """The parameters as the response reports them (``None``: the bundle's default was used)."""
        return asdict(self)


class _Getter:
    """``request[name]`` under any of its aliases; two aliases given at once is an error."""

    def __init__(self, request: Mapping, aliases: Mapping[str, tuple[str, ...]]) -> None:
        self.request, self.aliases = request, aliases

    def __call__(self, name: str, default):
        present = [key for key in self.aliases.get(name, (name,)) if self.request.get(key) not in (None, "")]
        if len(present) > 1:
            raise XRealInputError(name, f"given twice, as {present[0]!r} and {present[1]!r}")
        return self.request[present[0]] if present else default


def _demographics(request: Mapping) -> dict:
    flat = {k: request[k] for k in DEMOGRAPHIC_FIELDS if request.get(k) not in (None, "")}
    nested = request.get("demographics")
    if nested not in (None, "", {}) and flat:
        raise XRealInputError("demographics", f"given both as an object and as {sorted(flat)}")
    demographics = Demographics.from_mapping(nested if nested not in (None, "", {}) else flat)
    return {} if demographics is None else demographics.as_dict()


def _number(value, name: str, integer: bool = False, low: float | None = None, high: float | None = None):
    """A finite number from a JSON number or numeric text, within ``[low, high]``."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise XRealInputError(name, f"must be {kind}, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise XRealInputError(name, f"must be {kind}, got {value!r}") from None
    if not math.isfinite(number):
        raise XRealInputError(name, f"must be finite, got {value!r}")
    if integer:
        if number != int(number):
            raise XRealInputError(name, f"must be {kind}, got {value!r}")
        number = int(value) if isinstance(value, int) else int(number)
    if (low is not None and number < low) or (high is not None and number > high):
        raise XRealInputError(name, f"{value!r} is outside [{low}, {high}]".replace(", None]", ", inf]"))
    return number


def _knob(value, knob: Knob, limits: GenerateLimits) -> int | float | str | None:
    """A sampling knob of the request (``None``: the bundle's default), in its range (steps: also the server's)."""
    if value is None:
        return None
    if knob.kind is str:
        return knob.check(value)
    high = min(knob.high, limits.max_steps) if knob.name == "num_inference_steps" else knob.high
    return knob.kind(_number(value, knob.alias or knob.name, integer=knob.kind is int, low=knob.low, high=high))


def _boxes(value, max_boxes: int) -> list[list[float]]:
    """``[[x_min, y_min, x_max, y_max], ...]`` from a JSON list (one box may be given flat)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise XRealInputError("boxes", f"must be a list of [x_min, y_min, x_max, y_max], got {type(value).__name__}")
    boxes = [value] if len(value) == 4 and not any(isinstance(v, (list, tuple)) for v in value) else list(value)
    if len(boxes) > max_boxes:
        raise RequestTooLarge("boxes", f"{len(boxes)} boxes; this server takes at most {max_boxes}")
    checked = []
    for i, box in enumerate(boxes):
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise XRealInputError("boxes", f"box {i} must be [x_min, y_min, x_max, y_max], got {box!r}")
        box = [float(_number(v, f"boxes[{i}]")) for v in box]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise XRealInputError("boxes", f"box {i} {box} needs x_min < x_max and y_min < y_max")
        checked.append(box)
    return checked
