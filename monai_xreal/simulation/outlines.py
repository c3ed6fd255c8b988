# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Real lung outlines for a CT's radiographs: a smooth 2D warp of the detector plane that carries the CT's projected
lung fields onto a real lung pair (torchxrayvision's masks drawn on real CXRs).

The warp maps each point of the target outline's frame to the point of the reference projection whose ray to take,
so a radiograph cast through the warped rays shows the CT's anatomy (ribs, heart, mediastinum) stretched to the real
lung shape. It is found once per real shape by maximising the soft Dice of the two lung pairs under a smoothness
penalty on a coarse grid of control points (bicubic in between, zero at the border: the far field does not move).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from monai_xreal.data.phantoms.lungs import LungShapes
from monai_xreal.errors import XRealInputError

__all__ = ["LUNG_SHAPE_POOLS", "LungBox", "OutlineWarps", "shape_pool"]

LUNG_SHAPE_POOLS = ("all", "train", "held-out")


def shape_pool(shapes: LungShapes, pool: str) -> list[int]:
    """Indices of ``shapes`` in a pool: ``"held-out"`` is every shape whose file name hashes to 0 mod 5 (about a
    fifth, the same whatever the order or number of shapes), ``"train"`` the others, ``"all"`` every shape."""
    if pool not in LUNG_SHAPE_POOLS:
        raise XRealInputError("lung_shapes", f"must be one of {LUNG_SHAPE_POOLS}, got {pool!r}")
    held_out = [int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 5 == 0 for name in shapes.names]
    keep = {"all": lambda h: True, "train": lambda h: not h, "held-out": lambda h: h}[pool]
    indices = [i for i, h in enumerate(held_out) if keep(h)]
    if not indices:
        raise XRealInputError("lung_shapes", f"the {pool!r} pool of {len(shapes)} lung shapes is empty")
    return indices


@dataclass(frozen=True)
class LungBox:
    """A lung pair's bounding box on the detector, in mm: ``top``/``bottom`` along ``v``, ``left``/``right`` along
    ``u``."""

    top: float
    bottom: float
    left: float
    right: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)``, edges replicated."""
    radius = max(1, int(3 * sigma))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.transpose(2, 3), groups=x.shape[1])


def _jacobian(field: torch.Tensor) -> torch.Tensor:
    """``(B, G-1, G-1)`` determinant of ``identity + field`` for a ``(B, 2, G, G)`` displacement in pixels."""
    du_dx, dv_dx = field[:, 0, :-1, 1:] - field[:, 0, :-1, :-1], field[:, 1, :-1, 1:] - field[:, 1, :-1, :-1]
    du_dy, dv_dy = field[:, 0, 1:, :-1] - field[:, 0, :-1, :-1], field[:, 1, 1:, :-1] - field[:, 1, :-1, :-1]
    return (1 + du_dx) * (1 + dv_dy) - du_dy * dv_dx


class OutlineWarps:
    """Warps from real lung outlines to a CT's reference lung fields.

    Args:
        reference: ``(2, G, G)`` bool, the CT's right and left lung fields projected onto ``frame``.
        frame: the detector region (mm) that ``reference`` covers.
        shapes: the real lung pairs.
        control_points: control points per side of the warp's grid.
        iterations: optimiser steps per shape.
    """

    def __init__(
        self, reference: torch.Tensor, frame: LungBox, shapes: LungShapes, control_points: int = 10,
        iterations: int = 160,
    ) -> None:  # fmt: skip
        self.reference = reference.float()
        self.frame, self.shapes = frame, shapes
        self.size = int(reference.shape[-1])
        self.control_points, self.iterations = control_points, iterations
        rows = torch.nonzero(reference.any(0).any(1)).flatten()
        columns = torch.nonzero(reference.any(0).any(0)).flatten()
        if len(rows) == 0:
            raise XRealInputError("ct", "its lungs do not project onto the detector")
        pixel_v, pixel_u = frame.height / self.size, frame.width / self.size
        self.lungs = LungBox(
            frame.top + float(rows[0]) * pixel_v, frame.top + float(rows[-1] + 1) * pixel_v,
            frame.left + float(columns[0]) * pixel_u, frame.left + float(columns[-1] + 1) * pixel_u,
        )  # fmt: skip
        self._cache = functools.lru_cache(maxsize=1024)(self._fit)

    def target_box(self, index: int) -> LungBox:
        """Where the real pair ``index`` is placed: on the CT's lung box (the warp changes the shape, not the size;
        the real pair's aspect is applied by scaling the image, :attr:`aspect_ratio`)."""
        return self.lungs

    def aspect_ratio(self, index: int) -> float:
        """The real pair's height / width over the CT's lungs'."""
        return float(self.shapes.aspects[index]) / (self.lungs.height / self.lungs.width)

    def target(self, index: int) -> torch.Tensor:
        """``(2, G, G)`` float: the real pair ``index`` drawn on the frame at :meth:`target_box`."""
        box = self.target_box(index)
        g = (torch.arange(self.size, dtype=torch.float32) + 0.5) / self.size
        v = self.frame.top + g * self.frame.height
        u = self.frame.left + g * self.frame.width
        vv, uu = torch.meshgrid((v - box.top) / box.height * 2 - 1, (u - box.left) / box.width * 2 - 1, indexing="ij")
        pair = torch.from_numpy(self.shapes.shapes[index]).float()[None]
        return F.grid_sample(pair, torch.stack([uu, vv], -1)[None], align_corners=False)[0]

    def displacement(self, index: int) -> torch.Tensor:
        """``(2, G, G)`` displacement in mm (``du``, ``dv``) at each frame pixel: target point + displacement = the
        reference point whose ray to cast."""
        return self._cache(int(index))

    def _fit(self, index: int) -> torch.Tensor:
        target = self.target(index)[None]
        source = self.reference[None]
        k, g = self.control_points, self.size
        control = torch.zeros(1, 2, k, k, requires_grad=True)
        optimiser = torch.optim.Adam([control], lr=0.02)
        axis = (torch.arange(g, dtype=torch.float32) + 0.5) / g * 2 - 1  # pixel centres
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        identity = torch.stack([xx, yy], -1)[None]
        blurred = {s: (_blur(source, s), _blur(target, s)) for s in (3.0, 1.0)}
        with torch.enable_grad():
            for step in range(self.iterations):
                src, tgt = blurred[3.0 if step < self.iterations // 2 else 1.0]
                field = self._field(control)
                warped = F.grid_sample(src, identity + field.permute(0, 2, 3, 1), align_corners=False)
                dice = (2 * (warped * tgt).sum((2, 3)) + 1) / ((warped + tgt).sum((2, 3)) + 1)
                bending = sum(((control.diff(dim=d)) ** 2).sum() for d in (2, 3))
                # keep the warp a smooth bijection: area changes (the Jacobian) near 1, no folds
                jacobian = _jacobian(field * g / 2)
                folding = (torch.log(jacobian.clamp(min=0.05)) ** 2).mean() + 10 * (0.2 - jacobian).clamp(min=0).mean()
                loss = (1 - dice).mean() + 0.02 * bending + 0.002 * (control**2).sum() + 0.1 * folding
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        field = self._field(control.detach())[0]  # normalised units: 2 = the frame's width / height
        return torch.stack([field[0] * self.frame.width / 2, field[1] * self.frame.height / 2])

    def _field(self, control: torch.Tensor) -> torch.Tensor:
        """The dense ``(1, 2, G, G)`` field of the control points (zero on the border): linear interpolation
        smoothed by a Gaussian of half the control spacing, so its derivatives vary smoothly too (cubic
        convolution ripples between knots)."""
        padded = F.pad(control, (1, 1, 1, 1))
        dense = F.interpolate(padded, size=(self.size, self.size), mode="bilinear", align_corners=True)
        return _blur(dense, 0.5 * self.size / (self.control_points + 1))

    def warp(self, u: torch.Tensor, v: torch.Tensor, index: int, strength: float = 1.0):
        """Reference detector points for target points ``(u, v)`` (mm, any shape): ``point + strength * field``."""
        field = self.displacement(index)[None]
        nu = (u - self.frame.left) / self.frame.width * 2 - 1
        nv = (v - self.frame.top) / self.frame.height * 2 - 1
        grid = torch.stack([nu, nv], -1).reshape(1, 1, -1, 2)
        shift = F.grid_sample(field, grid, align_corners=False, padding_mode="zeros")[0, :, 0]
        return u + strength * shift[0].reshape(u.shape), v + strength * shift[1].reshape(v.shape)
