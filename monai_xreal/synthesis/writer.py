# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Writing one generated image with its provenance sidecar, each file complete or absent; :func:`staged_files`, the
one way this package writes several files that belong together."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from monai_xreal.io import save_images
from monai_xreal.io.atomic import signals_deferred
from monai_xreal.io.dicom import DicomIdentity, write_dicom
from monai_xreal.io.formats import IMAGE_FORMATS
from monai_xreal.io.hashing import sha256_file

__all__ = [
    "IMAGE_FORMATS",
    "PARTIAL_PREFIX",
    "StagedFiles",
    "SyntheticImageWriter",
    "WrittenImage",
    "remove_partials",
    "sidecar_path",
    "staged_files",
]

PARTIAL_PREFIX = ".partial-"  # folders of files being written; left behind only by a killed process


@dataclass
class StagedFiles:
    """Files written in ``folder`` (hidden, beside their targets) and the targets they go to, in order."""

    folder: Path
    moves: list[tuple[Path, Path]] = field(default_factory=list)

    def move(self, written: Path, target: Path) -> None:
        """Put ``written`` (a file in :attr:`folder`) at ``target`` when the block succeeds."""
        self.moves.append((Path(written), Path(target)))


@contextlib.contextmanager
def staged_files(folder: str | Path) -> Iterator[StagedFiles]:
    """Write several files that belong together (an image and its sidecar; an image and its masks), each complete
    or absent: they are written in a hidden ``.partial-*`` folder inside ``folder``, then each is flushed to disk and
    renamed onto its target in the order :meth:`StagedFiles.move` was called. A crash leaves finished files and at
    most a ``.partial-*`` folder, which :func:`remove_partials` clears."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged = None
    try:  # the folder is made and removed with signals held back, so an interruption cannot leave it behind
        with signals_deferred():
            staged = StagedFiles(Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=folder)))
        yield staged
        for written, target in staged.moves:
            with open(written, "rb") as handle:
                os.fsync(handle.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(written, target)
    finally:
        if staged is not None:
            with signals_deferred():
                shutil.rmtree(staged.folder, ignore_errors=True)


@dataclass(frozen=True)
class WrittenImage:
    path: Path
    sidecar: Path
    sha256: str


class SyntheticImageWriter:
    """Writes ``<stem><ext>`` and ``<stem>.json`` (the provenance record plus the file's name and SHA-256).

    Both are written in a hidden folder beside them and renamed into place, the sidecar first: a crash leaves
    either nothing or a complete pair (and a ``.partial-*`` folder that :func:`remove_partials` clears).

    Args:
        fmt: ``png`` (8-bit), ``nii.gz`` / ``nii`` (float32) or ``dcm`` (16-bit synthetic Secondary Capture, with
            the record inside; see :mod:`monai_xreal.io.dicom`).
    """

    def __init__(self, fmt: str = "png") -> None:
        if fmt not in IMAGE_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {sorted(IMAGE_FORMATS)}")
        self.fmt, self.ext = fmt, IMAGE_FORMATS[fmt]

    def write(
        self,
        image: torch.Tensor,
        folder: str | Path,
        stem: str,
        provenance: Mapping,
        identity: DicomIdentity | None = None,
    ) -> WrittenImage:
        """Write a ``(1, X, Y)`` image in [0, 1] (``identity`` is required for DICOM)."""
        folder = Path(folder)
        name = f"{stem}{self.ext}"
        output = {"file": name, "format": self.fmt}
        with staged_files(folder) as staged:
            partial = staged.folder
            if self.fmt == "dcm":
                if identity is None:
                    raise ValueError("a DICOM needs its DicomIdentity (UIDs, time, patient fields)")
                write_dicom(image, partial / name, provenance, identity)
                output["dicom"] = {"study_uid": identity.study_uid, "series_uid": identity.series_uid,
                                   "instance_uid": identity.instance_uid}  # fmt: skip
            else:
                save_images(image[None], [stem], partial, self.fmt)
            output["sha256"] = sha256_file(partial / name)
            sidecar = partial / f"{stem}.json"
            sidecar.write_text(json.dumps({**provenance, "output": output}, indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")  # fmt: skip
            staged.move(sidecar, folder / sidecar.name)  # the sidecar first: an image never stands without it
            staged.move(partial / name, folder / name)
        return WrittenImage(folder / name, folder / f"{stem}.json", output["sha256"])


def sidecar_path(image: str | Path) -> Path:
    """``<stem>.json`` beside ``<stem><ext>`` (the extension being one of :data:`IMAGE_FORMATS`')."""
    image = Path(image)
    for ext in sorted(IMAGE_FORMATS.values(), key=len, reverse=True):
        if image.name.endswith(ext):
            return image.with_name(image.name[: -len(ext)] + ".json")
    return image.with_suffix(".json")


def remove_partials(folder: str | Path) -> int:
    """Delete the ``.partial-*`` folders a killed writer left in ``folder`` (recursively); returns how many."""
    found = [p for p in Path(folder).rglob(f"{PARTIAL_PREFIX}*") if p.is_dir()]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return len(found)
