# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Real lung shapes for the phantoms: the lung masks drawn on real CXRs, split into the two lungs.

The default source is ``semantic_masks_v7labs_lungs.zip`` from the torchxrayvision wheel (517 binary masks of both
lungs). Masks that are not two side-by-side lungs (empty, one component, lateral views) are left out; each kept
mask is cropped to the lungs' bounding box and resampled to a fixed grid, so a phantom only has to place and warp it.
"""

from __future__ import annotations

import functools
import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from monai_xreal.data.packaged import torchxrayvision_file
from monai_xreal.errors import XRealInputError

__all__ = ["LungShapes", "load_lung_shapes"]

logger = logging.getLogger(__name__)

_GRID = 128  # shape grid; phantoms up to 512 px resample it with linear interpolation, which keeps edges smooth
_MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class LungShapes:
    """A library of real lung-pair shapes.

    Attributes:
        shapes: ``(N, 2, G, G)`` float32 in {0, 1}, rows then columns of the lungs' bounding box; channel 0 is the
            lung on the image's left (the patient's right lung), channel 1 the lung on the image's right.
        aspects: ``(N,)`` height / width of each shape's bounding box in the source image.
        names: the source file of each shape.
    """

    def __init__(self, shapes: np.ndarray, aspects: np.ndarray, names: list[str]) -> None:
        if len(shapes) == 0:
            raise XRealInputError("lung_masks", "no usable two-lung mask found")
        self.shapes, self.aspects, self.names = shapes, aspects, names

    def __len__(self) -> int:
        return len(self.shapes)


def _source_masks(source: Path) -> Iterator[tuple[str, bytes]]:
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in _MASK_SUFFIXES):
            yield str(path.relative_to(source)), path.read_bytes()
        return
    try:
        with zipfile.ZipFile(source) as archive:
            for name in sorted(archive.namelist()):
                if Path(name).suffix.lower() in _MASK_SUFFIXES:
                    yield name, archive.read(name)
    except zipfile.BadZipFile as err:
        raise XRealInputError(str(source), f"not a zip archive of lung masks: {err}") from err


def _decode(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.draft("L", (4 * _GRID, 4 * _GRID))  # JPEG: decode at reduced scale, which is most of the loading time
    image = image.convert("L")
    factor = min(image.size) // (2 * _GRID)
    if factor > 1:
        image = image.reduce(factor)
    return np.asarray(image) > 127


def _lung_pair(mask: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The two lungs of a binary mask on a ``(G, G)`` grid of their bounding box, or None if it is not a lung pair."""
    components, count = ndimage.label(mask)
    if count < 2:
        return None
    sizes = np.bincount(components.ravel())[1:]
    first, second = np.argsort(sizes)[::-1][:2] + 1
    if sizes[second - 1] < 0.35 * sizes[first - 1] or sizes[[first - 1, second - 1]].sum() < 0.95 * mask.sum():
        return None
    lungs = [components == first, components == second]
    columns = [np.flatnonzero(lung.any(0)) for lung in lungs]
    rows = [np.flatnonzero(lung.any(1)) for lung in lungs]
    if columns[0].mean() > columns[1].mean():
        lungs, columns, rows = lungs[::-1], columns[::-1], rows[::-1]
    # side by side, not overlapping in x, sharing most of their height: a frontal view
    if columns[0].max() >= columns[1].min():
        return None
    shared = min(rows[0].max(), rows[1].max()) - max(rows[0].min(), rows[1].min())
    if shared < 0.6 * max(np.ptp(rows[0]), np.ptp(rows[1])):
        return None
    top, bottom = min(r.min() for r in rows), max(r.max() for r in rows) + 1
    left, right = columns[0].min(), columns[1].max() + 1
    aspect = (bottom - top) / (right - left)
    if not 0.6 <= aspect <= 1.4:
        return None
    pair = np.stack([lung[top:bottom, left:right] for lung in lungs]).astype(np.float32)
    zoom = (1, _GRID / pair.shape[1], _GRID / pair.shape[2])
    return (ndimage.zoom(pair, zoom, order=1) > 0.5).astype(np.float32), float(aspect)


@functools.lru_cache(maxsize=4)
def load_lung_shapes(source: str | Path | None = None) -> LungShapes:
    """Read and filter the lung masks once per process.

    Args:
        source: a zip archive or a folder of binary masks of both lungs on frontal CXRs (white lungs); default:
            torchxrayvision's ``semantic_masks_v7labs_lungs.zip``.

    Raises:
        XRealInputError: the source is missing, unreadable or holds no usable lung pair.
    """
    path = torchxrayvision_file("lung_masks") if source is None else Path(source)
    if not path.exists():
        raise XRealInputError(str(path), "no such lung-mask archive or folder")
    shapes, aspects, names, rejected = [], [], [], 0
    for name, data in _source_masks(path):
        try:
            pair = _lung_pair(_decode(data))
        except OSError:
            pair = None
        if pair is None:
            rejected += 1
            continue
        shapes.append(pair[0])
        aspects.append(pair[1])
        names.append(name)
    logger.info("%s: %d lung pairs, %d masks left out (not two frontal lungs)", path, len(shapes), rejected)
    return LungShapes(np.stack(shapes) if shapes else np.zeros((0, 2, _GRID, _GRID)), np.asarray(aspects), names)
