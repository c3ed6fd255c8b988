# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Training noise schedules of other implementations as MONAI ``DDIMScheduler`` config definitions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from monai_xreal.errors import XRealInputError

__all__ = ["check_betas", "compvis_scheduler_definition", "diffusers_scheduler_definition"]

# diffusers' beta_schedule -> MONAI's; diffusers' and CompVis' "scaled_linear" / "linear" (linear in sqrt(beta))
# is MONAI's "scaled_linear_beta", not its "linear_beta"
_DIFFUSERS_SCHEDULES = {"scaled_linear": "scaled_linear_beta", "linear": "linear_beta", "squaredcos_cap_v2": "cosine"}
_COMPVIS_SCHEDULES = {"linear": "scaled_linear_beta", "cosine": "cosine"}
_PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v_prediction", "sample": "sample",
                "eps": "epsilon", "v": "v_prediction", "x0": "sample"}  # fmt: skip


def _definition(schedule: str, beta_start: float, beta_end: float, steps: int, prediction: str, **extra) -> dict:
    definition = {
        "_target_": "monai.networks.schedulers.DDIMScheduler", "num_train_timesteps": int(steps),
        "schedule": schedule, "prediction_type": prediction, "clip_sample": False,
    }  # fmt: skip
    if schedule != "cosine":
        definition.update(beta_start=float(beta_start), beta_end=float(beta_end))
    return {**definition, **extra}


def diffusers_scheduler_definition(config: Mapping[str, Any]) -> dict:
    """A MONAI ``DDIMScheduler`` definition from a diffusers ``scheduler/scheduler_config.json``.

    Raises:
        XRealInputError: a schedule or option MONAI's DDIM does not have (zero-SNR rescaling, thresholding,
            trained betas, timestep spacings other than ``leading``).
    """
    schedule = config.get("beta_schedule", "linear")
    if schedule not in _DIFFUSERS_SCHEDULES:
        raise XRealInputError("input", f"scheduler beta_schedule={schedule!r} has no MONAI equivalent")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _PREDICTIONS:
        raise XRealInputError("input", f"scheduler prediction_type={prediction!r} has no MONAI equivalent")
    for key, allowed in (("rescale_betas_zero_snr", (False, None)), ("thresholding", (False, None)),
                         ("trained_betas", (None,)), ("timestep_spacing", ("leading", None))):  # fmt: skip
        if config.get(key) not in allowed:
            raise XRealInputError(
                "input", f"scheduler {key}={config[key]!r} is not supported (expected {allowed[0]!r})"
            )
    return _definition(
        _DIFFUSERS_SCHEDULES[schedule], config.get("beta_start", 0.0001), config.get("beta_end", 0.02),
        config.get("num_train_timesteps", 1000), _PREDICTIONS[prediction],
        set_alpha_to_one=bool(config.get("set_alpha_to_one", True)), steps_offset=int(config.get("steps_offset", 0)),
    )  # fmt: skip


def compvis_scheduler_definition(settings: Mapping[str, Any]) -> dict:
    """A MONAI ``DDIMScheduler`` definition from a CompVis config's ``beta_schedule``, ``linear_start``,
    ``linear_end``, ``timesteps`` and ``parameterization``, sampled as CompVis' DDIM does (the last step lands on
    alpha_bar_0, timesteps offset by one)."""
    schedule = settings["beta_schedule"]
    if schedule not in _COMPVIS_SCHEDULES or settings["parameterization"] not in _PREDICTIONS:
        raise XRealInputError(
            "original_config", f"beta_schedule={schedule!r}, parameterization={settings['parameterization']!r} "
            "have no MONAI equivalent",
        )  # fmt: skip
    return _definition(
        _COMPVIS_SCHEDULES[schedule], settings["linear_start"], settings["linear_end"], settings["timesteps"],
        _PREDICTIONS[settings["parameterization"]], set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip


def check_betas(scheduler: Any, betas: torch.Tensor | None, source: str) -> None:
    """Refuse a schedule that disagrees with the ``betas`` buffer a CompVis checkpoint saved (when it has one)."""
    if betas is None:
        return
    ours = scheduler.betas.double()
    if betas.shape != ours.shape or not torch.allclose(betas.double().cpu(), ours, rtol=1e-4, atol=1e-7):
        raise XRealInputError(
            "original_config", f"the schedule does not match the betas saved in {source} (first/last saved "
            f"{float(betas[0]):.6g}/{float(betas[-1]):.6g}, configured {float(ours[0]):.6g}/{float(ours[-1]):.6g})",
        )  # fmt: skip
