# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Writing generated images with MONAI's ``SaveImage``, all-or-nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import to_affine_nd
from monai.transforms import SaveImage

from monai_xreal.io.atomic import signals_deferred
from monai_xreal.io.formats import ARRAY_FORMATS

__all__ = ["FORMATS", "save_images", "staged_folder"]

FORMATS = ARRAY_FORMATS  # the formats save_images writes (see monai_xreal.io.formats)


def save_images(
    images: torch.Tensor | np.ndarray,
    names: Sequence[str],
    folder: str | Path,
    fmt: str = "png",
    labels: bool = False,
    affines: Sequence[np.ndarray | torch.Tensor | None] | None = None,
) -> list[Path]:
    """Write ``(B, 1, X, Y)`` images as ``folder/<name><ext>``; returns the paths written.

    Images (``labels=False``) are floats in [0, 1]: PNG stores them as 8-bit (x 255) through MONAI's ``SaveImage``,
    NIfTI keeps the float values. Label maps and masks (``labels=True``) are stored as their uint8 values in both.
    Spatial axes stay in MONAI's reader order, so a file written here and read back with ``LoadImage`` gives the
    same array. NIfTI files get ``affines[i]`` (a 2D ``(3, 3)`` or 3D ``(4, 4)`` affine as MONAI's readers give it,
    e.g. the condition's, so the image overlays it in a viewer), else the identity; PNG has no geometry.
    """
    ext = FORMATS[fmt]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    images = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    affines = list(affines) if affines is not None else [None] * len(images)
    if not len(images) == len(names) == len(affines):
        raise ValueError(f"{len(images)} images, {len(names)} names and {len(affines)} affines: give one each")
    for image, name, affine in zip(images, names, affines, strict=True):
        image = image.detach().cpu()
        image = image.to(torch.uint8) if labels else image.float()
        path = folder / f"{name}{ext}"
        if fmt == "png":  # the file name with its extension: SaveImage cuts what follows the last dot of a stem
            SaveImage(
                output_dir=str(folder), output_ext=ext, output_postfix="", separate_folder=False, resample=False,
                scale=None if labels else 255, output_dtype=np.uint8, print_log=False,
            )(MetaTensor(image, meta={"filename_or_obj": path.name}))  # fmt: skip
        else:
            # nibabel directly: MONAI 1.6.1's NibabelWriter fails on 2D data with resample=False
            affine = np.eye(4) if affine is None else to_affine_nd(3, np.asarray(affine, dtype=np.float64))
            nib.save(nib.Nifti1Image(image[0].numpy(), affine), str(path))
        paths.append(path)
    return paths


@contextlib.contextmanager
def staged_folder(output: str | Path) -> Iterator[Path]:
    """A hidden sibling folder that becomes ``output`` (absent or empty) only if the block succeeds, e.g. a bundle.

    On success its permissions become those of a folder made normally (``mkdtemp`` makes it private) and it is
    renamed into place; on any error it is removed and ``output`` is left as it was.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = None
    try:  # made and removed with signals held back, so an interruption cannot leave it behind
        with signals_deferred():
            staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        yield staging
        mask = os.umask(0)
        os.umask(mask)
        for path in [staging, *staging.rglob("*")]:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
        if output.exists():
            output.rmdir()
        staging.rename(output)
    except BaseException:
        if staging is not None:
            with signals_deferred():
                shutil.rmtree(staging, ignore_errors=True)
        raise
