# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""From line integrals to a radiograph: Beer-Lambert exposure, scatter, quantum noise, detector blur, the detector's
log signal and a CR/DR-like display (dynamic-range compression, edge enhancement, window).

Attenuation: CT numbers are mapped to linear attenuation at the beam's effective energy,
``mu = mu_water * (1 + HU / 1000)`` for soft tissue and air, with bone (HU > 100) scaled up by ``bone_gain``:
a chest film's effective energy (~60 keV) is lower than a CT's (~70 keV), where bone attenuates relatively more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Exposure", "attenuation", "display", "expose"]

MU_WATER = 0.0206  # per mm, water at ~60 keV
_BONE_HU = 100.0


@dataclass(frozen=True)
class Exposure:
    """One exposure's settings (each drawn per image by the simulator).

    Attributes:
        photons: detected photons per pixel without a patient (quantum noise: fewer is noisier).
        scatter: scattered fraction, spread over the image as a smooth veil.
        blur: detector blur (Gaussian sigma) as a fraction of the image side.
        bone_gain: how much more bone attenuates than its CT number says.
        compression: strength of the display's large-scale dynamic-range compression (0: none).
        sharpening: strength of the display's edge enhancement (0: none).
        gamma: display gamma; above 1 darkens the mid-tones.
    """

    photons: float = 8000.0
    scatter: float = 0.1
    blur: float = 0.002
    bone_gain: float = 1.25
    compression: float = 0.5
    sharpening: float = 0.6
    gamma: float = 1.0


def attenuation(hu: torch.Tensor, bone_gain: float = 1.25) -> torch.Tensor:
    """Linear attenuation per mm from Hounsfield units (air 0, water :data:`MU_WATER`, bone enhanced)."""
    mu = MU_WATER * torch.clamp(1.0 + hu / 1000.0, min=0.0)
    bone = torch.clamp(hu - _BONE_HU, min=0.0)
    return mu + MU_WATER * (bone_gain - 1.0) * bone / 1000.0


def _gaussian(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an ``(H, W)`` image (reflecting edges)."""
    if sigma <= 0.1:
        return image
    radius = max(1, int(3 * sigma))
    radius = min(radius, min(image.shape) - 1)
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.pad(image[None, None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[0, 0]


def expose(line_integral: torch.Tensor, exposure: Exposure, generator: torch.Generator) -> torch.Tensor:
    """The detector's log signal ``-log(I / I0)`` of an exposure: ``(H, W)`` line integrals in, ``(H, W)`` out.

    Primary intensity ``I0 exp(-L)`` plus scatter (a blurred copy of the primary, ``scatter`` of the total), Poisson
    noise of ``photons`` per pixel, then detector blur.
    """
    side = max(line_integral.shape)
    primary = torch.exp(-line_integral)
    scattered = _gaussian(primary, 0.08 * side)
    signal = (1.0 - exposure.scatter) * primary + exposure.scatter * scattered
    counts = torch.poisson(signal * exposure.photons, generator=generator)
    counts = _gaussian(counts.clamp(min=0.5), exposure.blur * side)
    return -torch.log(counts / exposure.photons)


def display(signal: torch.Tensor, body: torch.Tensor, exposure: Exposure) -> torch.Tensor:
    """A CR/DR-like presentation of the log signal: ``(H, W)`` in [0, 1], bright where attenuation is high.

    Large-scale variations are compressed (so lungs and mediastinum both show detail), edges enhanced (ribs,
    vessels), then the body's 0.5th-99.8th percentiles are windowed to [0, 1] with ``gamma``.

    Args:
        signal: ``(H, W)`` log signal (:func:`expose`).
        body: ``(H, W)`` bool, where the beam crossed the patient (sets the window).
        exposure: the display settings.
    """
    side = max(signal.shape)
    background = _gaussian(signal, 0.06 * side)
    detail = signal - _gaussian(signal, 0.006 * side + 0.5)
    processed = signal - exposure.compression * (background - background[body].mean()) + exposure.sharpening * detail
    inside = processed[body] if body.any() else processed.flatten()
    low, high = torch.quantile(inside[:: max(1, inside.numel() // 100_000)], torch.tensor([0.005, 0.998]))
    image = torch.clamp((processed - low) / (high - low + 1e-6), 0.0, 1.0) ** exposure.gamma
    return image
