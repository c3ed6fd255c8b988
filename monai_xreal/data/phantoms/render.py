# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The phantom's radiograph: attenuation summed along the beam, then a detector-like response, blur and noise.

Attenuation (in arbitrary units of soft-tissue thickness): the body is soft tissue, thickest in the middle; the
lungs take most of it away (air), except for vessel markings that fan out from the hila; ribs, clavicles and spine
add bone. Findings add fluid or tissue, or take the markings away (free air). The image is ``1 - exp(-k * mu)``:
dark lungs, bright bone and mediastinum, black air outside the body.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from monai_xreal.data.phantoms.anatomy import Anatomy
from monai_xreal.data.phantoms.findings import Finding

__all__ = ["render_radiograph"]

_BONE = {"rib": 0.2, "clavicle": 0.35, "spine": 0.5}


def _body(anatomy: Anatomy, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft-tissue thickness: a trunk widest at the shoulders, narrowing to the neck, thickest at the midline."""
    top, bottom, left, right = anatomy.lung_box
    size = yy.shape[0]
    half = (right - left) / 2 * rng.uniform(1.12, 1.2)
    shoulders = np.clip((yy - (top - 0.05 * size)) / (0.07 * size), 0.0, 1.0)
    waist = 1.0 - 0.06 * np.clip((yy - bottom) / (0.2 * size), 0.0, 1.0)
    half_width = half * (0.4 + 0.6 * np.sin(0.5 * np.pi * shoulders)) * waist
    across = np.clip(1.0 - ((xx - anatomy.midline) / half_width) ** 2, 0.0, None)
    return np.sqrt(across)


def _ribs(anatomy: Anatomy, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Posterior ribs: arcs leaving the spine, rising a little, then bending down along the lateral chest wall."""
    top, bottom, left, right = anatomy.lung_box
    height, half = bottom - top, (right - left) / 2
    spacing = height / rng.uniform(9.0, 10.5)
    lateral = np.abs(xx - anatomy.midline) / half
    curve = height * (-0.12 * lateral + 0.3 * lateral**2)
    phase = (yy - top + 0.5 * spacing - curve) / spacing
    within = phase - np.floor(phase)
    thickness = 0.38
    # brighter cortex at both edges of each rib
    profile = np.where(within < thickness, 0.6 + 0.4 * np.abs(2 * within / thickness - 1) ** 2, 0.0)
    keep = (phase >= 0) & (yy < bottom + 0.04 * height) & (lateral > 0.1) & (lateral < 1.06)
    return profile * keep


def _clavicles(anatomy: Anatomy, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    top, bottom, left, right = anatomy.lung_box
    half = (right - left) / 2
    lateral = (xx - anatomy.midline) / half
    level = top + rng.uniform(0.12, 0.18) * (bottom - top)
    centre = level - 0.12 * (bottom - top) * np.clip(np.abs(lateral) - 0.15, 0.0, None)
    thickness = 0.025 * yy.shape[0]
    band = np.clip(1.0 - np.abs(yy - centre) / thickness, 0.0, 1.0) ** 0.5
    return band * ((np.abs(lateral) > 0.08) & (np.abs(lateral) < 0.85))


def _spine(anatomy: Anatomy, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    top, bottom, left, right = anatomy.lung_box
    width = 0.09 * (right - left)
    across = np.clip(1.0 - ((xx - anatomy.midline) / width) ** 2, 0.0, None) ** 0.3
    vertebra = 0.75 + 0.25 * np.cos(2 * np.pi * (yy - top) / ((bottom - top) / 9.5)) ** 2
    return across * vertebra


def _markings(anatomy: Anatomy, yy, xx, rng: np.random.Generator) -> np.ndarray:
    """Vessel markings: band-passed noise, dense at the hila, fading towards the periphery."""
    size = yy.shape[0]
    noise = rng.standard_normal((size, size)).astype(np.float32)
    fine = ndimage.gaussian_filter(noise, 0.008 * size) - ndimage.gaussian_filter(noise, 0.03 * size)
    vessels = np.clip(fine / (fine.std() + 1e-6), 0.0, None)
    top, bottom, left, right = anatomy.lung_box
    hilum_y = top + 0.45 * (bottom - top)
    distance = np.hypot((yy - hilum_y) / (bottom - top), (xx - anatomy.midline) / (right - left))
    return vessels * np.clip(1.0 - 1.6 * distance, 0.1, 1.0)


def render_radiograph(anatomy: Anatomy, findings: Sequence[Finding], rng: np.random.Generator) -> np.ndarray:
    """The phantom CXR, ``(S, S)`` float32 in [0, 1] (rows, columns)."""
    size = anatomy.heart.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    body = _body(anatomy, yy, xx, rng)
    lungs = ndimage.gaussian_filter((anatomy.right_lung | anatomy.left_lung).astype(np.float32), 0.006 * size)
    lucent = np.zeros_like(lungs)
    density = np.zeros_like(lungs)
    line = np.zeros_like(lungs)
    for finding in findings:
        if finding.lucent is not None:
            lucent = np.maximum(lucent, finding.lucent)
        if finding.density is not None:
            density = np.maximum(density, finding.density)
        if finding.line is not None:
            line = np.maximum(line, finding.line)

    below = np.clip((yy - anatomy.lung_box[1]) / (0.05 * size), 0.0, 1.0)
    mu = (1.3 + 0.25 * below) * body  # the abdomen under the diaphragm is denser
    air = lungs * (0.85 + 0.1 * lucent)
    mu -= air * body
    mu += 0.22 * lungs * (1.0 - lucent) * _markings(anatomy, yy, xx, rng)
    mu += 0.9 * density * body + 0.35 * line
    mu += _BONE["rib"] * _ribs(anatomy, yy, xx, rng) * body
    mu += _BONE["clavicle"] * _clavicles(anatomy, yy, xx, rng) * (body > 0)
    mu += _BONE["spine"] * _spine(anatomy, yy, xx) * (0.55 + 0.45 * (1.0 - lungs))

    exposure = rng.uniform(1.1, 1.5)
    image = 1.0 - np.exp(-exposure * np.clip(mu, 0.0, None))
    image = ndimage.gaussian_filter(image, max(0.004 * size, 0.5))
    image += rng.normal(0.0, 0.012, image.shape)
    image = np.clip(image / (1.0 - np.exp(-exposure * 2.2)), 0.0, 1.0) ** rng.uniform(0.85, 1.15)
    return image.astype(np.float32)
