# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A set of paired training samples (radiograph, anatomy label map, pathology mask, labels, report) on disk, written
by any maker of :class:`~monai_xreal.data.paired.PairedCXR` (phantoms, simulated radiographs), resumable and shared
over processes. Layout::

    dataset.json            the maker's settings, checked on restart
    manifest.jsonl          one line per finished sample (index, its datalist item, the files' SHA-256)
    images/<id>.<ext>       radiograph in [0, 1] (8-bit PNG or float NIfTI)
    anatomy/<id>.<ext>      label map, uint8
    pathology/<id>.<ext>    mask, uint8
    datalist.json           MONAI's {"training", "validation"}, paths relative to it
    conditions.json         the validation samples as generation conditions (monai_xreal.data.load_conditions)

Sample ``i`` is the maker's ``i`` whatever the number of processes or restarts. Rank ``r`` of ``w`` makes samples
``r, r + w, ...``; each sample's three files are written in a hidden folder and renamed into place, then its
manifest line is appended (under a lock, with ``fsync``), so a kill leaves finished samples, at most one cut
manifest line and a hidden folder, which the next run repairs and removes. Rank 0 writes the datalists at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from monai_xreal.data.paired import PAIRED_FOLDERS, PairedCXR, paired_item
from monai_xreal.errors import XRealInputError
from monai_xreal.io.hashing import sha256_file
from monai_xreal.io.writers import FORMATS, save_images
from monai_xreal.synthesis.manifest import Manifest, write_atomically
from monai_xreal.synthesis.writer import remove_partials, staged_files
from monai_xreal.transforms.prompts import BuildPrompt

__all__ = ["write_paired_set"]

SCHEMA = "monai_xreal.paired_set/1"


def write_paired_set(
    maker: Callable[[int], PairedCXR],
    output_dir: str | Path,
    num: int,
    settings: Mapping,
    fmt: str = "png",
    validation_fraction: float = 0.1,
    name: str = "sample",
    description: str = "",
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    progress: bool = False,
) -> Path:
    """Write ``num`` samples of ``maker`` and their datalists (or finish an interrupted run); returns the datalist.

    Args:
        maker: sample ``i`` -> :class:`PairedCXR` (deterministic in ``i``).
        output_dir: the set's folder (created, or continued).
        num: number of samples; the last ``validation_fraction`` of them are the validation set.
        settings: what makes the samples (maker, seed, size, sources...): a restart must have the same.
        fmt: ``png`` or ``nii.gz`` / ``nii``.
        name: sample ids are ``<name>_<index:05d>``.
        description: the datalist's description.
        rank, world_size, barrier: this process among those sharing the work (``torch.distributed``'s).
        progress: a progress bar (rank 0).

    Raises:
        XRealInputError: bad arguments, or ``output_dir`` holding another set.
    """
    if num < 1:
        raise XRealInputError("num", f"must be a positive integer, got {num}")
    if fmt not in FORMATS:
        raise XRealInputError("format", f"must be one of {sorted(FORMATS)}, got {fmt!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise XRealInputError("validation_fraction", f"must lie in [0, 1), got {validation_fraction}")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise XRealInputError("output-dir", f"{out} is not a folder")
    record = {"schema": SCHEMA, "num": int(num), "format": fmt, "validation_fraction": validation_fraction,
              "name": name, **json.loads(json.dumps(dict(settings), default=_json_number))}  # fmt: skip
    if rank == 0:
        _prepare(out, record)
    barrier()
    manifest = Manifest(out / "manifest.jsonl", key=("index",))
    finished = manifest.entries()
    mine = list(range(rank, num, world_size))
    ext = FORMATS[fmt]
    with tqdm(total=len(mine), unit="img", desc=name, disable=not progress or rank != 0) as bar:
        for index in mine:
            if _is_finished(out, finished.get((index,))):
                bar.update(1)
                continue
            sample_id = f"{name}_{index:05d}"
            sample = maker(index)
            files = _write_sample(out, sample, sample_id, fmt)
            item = {key: f"{folder}/{sample_id}{ext}" for key, folder in zip(("image", "anatomy", "pathology"),
                                                                              PAIRED_FOLDERS)}  # fmt: skip
            item.update(paired_item(sample, sample_id))
            line = {"index": index, "item": item, "sha256": files, "has_region": bool(sample.pathology.any())}
            manifest.append(json.loads(json.dumps(line, default=_json_number)))
            bar.update(1)
    barrier()
    if rank == 0:
        _finalize(out, num, validation_fraction, description, record.get("size"), manifest)
    return out / "datalist.json"


def _prepare(out: Path, record: dict) -> None:
    """Start or check ``dataset.json``; repair the journal; remove what a killed writer left half-made."""
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "dataset.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        differing = sorted(k for k in set(info) | set(record) if info.get(k) != record.get(k))
        if differing:
            raise XRealInputError(
                str(out), f"already holds a set made with other settings ({', '.join(differing)}); continue it with "
                "the same options or choose a new folder",
            )  # fmt: skip
    elif any((out / n).exists() for n in (*PAIRED_FOLDERS, "datalist.json", "manifest.jsonl")):
        raise XRealInputError(str(out), "already holds files of another kind of set; choose a new or empty folder")
    else:
        write_atomically(info_path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    Manifest(out / "manifest.jsonl").repair()
    remove_partials(out)


def _write_sample(out: Path, sample: PairedCXR, sample_id: str, fmt: str) -> dict[str, str]:
    """The three files, each complete or absent: written in a hidden folder, then renamed into place."""
    hashes = {}
    arrays = {"images": (sample.image, False), "anatomy": (sample.anatomy, True), "pathology": (sample.pathology,
                                                                                              True)}  # fmt: skip
    with staged_files(out) as staged:
        for folder, (array, labels) in arrays.items():
            (path,) = save_images(array[None], [sample_id], staged.folder / folder, fmt, labels=labels)
            hashes[folder] = sha256_file(path)
            staged.move(path, out / folder / path.name)
    return hashes


def _is_finished(out: Path, entry: Mapping | None) -> bool:
    """A journal line whose three files exist with the recorded SHA-256."""
    if entry is None:
        return False
    files = {"images": entry["item"]["image"], "anatomy": entry["item"]["anatomy"],
             "pathology": entry["item"]["pathology"]}  # fmt: skip
    return all((out / f).is_file() and sha256_file(out / f) == entry["sha256"][k] for k, f in files.items())


def _finalize(out: Path, num: int, validation_fraction: float, description: str, size, manifest: Manifest) -> None:
    entries = manifest.entries()
    missing = [i for i in range(num) if (i,) not in entries]
    if missing:
        raise RuntimeError(f"samples {missing[:5]} are missing from {manifest.path} after the run")
    ordered = [entries[(i,)] for i in range(num)]
    manifest.rewrite(ordered)
    num_validation = int(round(validation_fraction * num))
    items = [e["item"] for e in ordered]
    datalist = {"description": description, "size": size, "training": items[: num - num_validation],
                "validation": items[num - num_validation :]}  # fmt: skip
    write_atomically(out / "datalist.json", json.dumps(datalist, indent=1, ensure_ascii=False) + "\n")
    first = num - num_validation
    conditions = [_condition(e["item"], e["has_region"], first + i) for i, e in enumerate(ordered[first:])]
    if conditions:
        write_atomically(out / "conditions.json", json.dumps({"conditions": conditions}, indent=1) + "\n")


def _condition(item: dict, has_region: bool, seed: int) -> dict:
    # without a finding region (e.g. "No Finding") the prompt conditions the anatomy stage
    condition = {"id": item["id"], "anatomy": item["anatomy"], "prompt": BuildPrompt()(item["labels"]), "seed": seed}
    return {**condition, "pathology": item["pathology"]} if has_region else condition


def _json_number(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
