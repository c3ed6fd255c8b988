# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""How each generated image was made: the record written beside it (and inside DICOM files), and its replay.

A record names the bundle (name, version, folder, SHA-256 of every weight file and one digest over them all, the
"model SHA-256"), the prompt, the anatomy and pathology masks (file, file SHA-256 and SHA-256 of the array as
loaded), every sampling setting with the seed, the batch the image was sampled in and the CPU thread count (a
sample's values depend, in the last bits, on both), the device and the package versions. :func:`reproduce` runs
the same batch again and returns the image, bit for bit on the same device and software.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import torch

from monai_xreal.bundle import SCALE_FACTOR_FILE, default_bundle_path
from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_mask
from monai_xreal.io.hashing import sha256_array, sha256_file

__all__ = [
    "SCHEMA",
    "bundle_record",
    "mask_record",
    "make_provenance",
    "read_provenance",
    "reproduce",
    "software_versions",
]

SCHEMA = "monai_xreal.provenance/1"
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ts", ".ckpt")
_PACKAGES = ("monai-xreal", "monai", "torch", "numpy", "pydicom", "transformers", "nibabel", "itk", "pillow")


def bundle_record(pipe, bundle_root: str | Path | None) -> dict:
    """Name, version, folder and weight-file digests of the bundle ``pipe`` was built from.

    ``weights`` maps ``models/<file>`` (the weight files and ``scale_factor.json``, and ``text_encoder/<file>`` for a
    text encoder loaded from its own folder) to SHA-256; ``model_sha256`` is the SHA-256 of those
    ``"<name> <digest>"`` lines, sorted: one value that changes whenever any weight does.
    """
    root = Path(bundle_root) if bundle_root is not None else default_bundle_path()
    meta = (
        json.loads((root / "configs" / "metadata.json").read_text())
        if (root / "configs" / "metadata.json").is_file()
        else {}
    )
    # the weights and the latent scale factor (models/scale_factor.json): both decide the pixels
    weights = {
        f"models/{f.name}": sha256_file(f)
        for f in sorted((root / "models").glob("*"))
        if f.suffix in WEIGHT_SUFFIXES or f"models/{f.name}" == SCALE_FACTOR_FILE
    }
    source = getattr(pipe.text_encoder, "source", None)
    if source is not None:
        weights |= {f"text_encoder/{f.name}": sha256_file(f) for f in sorted(Path(source).glob("*"))
                    if f.suffix in WEIGHT_SUFFIXES}  # fmt: skip
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(weights.items()))
    return {
        "name": meta.get("name", root.name),
        "version": meta.get("version"),
        "path": str(root.resolve()),
        "weights": weights,
        "model_sha256": hashlib.sha256(lines.encode()).hexdigest(),
    }


def mask_record(path: str | Path | None, mask: torch.Tensor | None) -> dict | None:
    """``{"file", "sha256", "array_sha256"}`` of a mask given as a file (``None`` when there is no mask)."""
    if mask is None:
        return None
    record = {"array_sha256": sha256_array(torch.as_tensor(mask).to(torch.uint8))}
    if path is not None:
        record = {"file": str(Path(path).resolve()), "sha256": sha256_file(path), **record}
    return record


def software_versions() -> dict:
    """Versions of Python, the platform and the packages that decide the pixels."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def make_provenance(
    bundle: Mapping,
    prompt: str,
    anatomy: Mapping | None,
    pathology: Mapping | None,
    settings: Mapping,
    batch_seeds: list[int],
    batch_index: int,
    device: torch.device | str,
    created: datetime | None = None,
    extra: Mapping | None = None,
) -> dict:
    """The record of one image: sample ``batch_index`` of a batch sampled with seeds ``batch_seeds``.

    Args:
        bundle: :func:`bundle_record`.
        prompt: the prompt.
        anatomy, pathology: :func:`mask_record` of each mask (``None``: not given).
        settings: ``pipe.settings(...).as_dict()``, every knob resolved.
        batch_seeds, batch_index: the seeds of the batch and this image's position in it.
        device: where it was sampled (recorded as its type, and the GPU's name for CUDA, so that ranks on
            ``cuda:0`` and ``cuda:1`` write the same record).
        created: time of generation (``None``: not recorded, as in datasets, whose files must not depend on
            when they were made).
        extra: more keys (e.g. the dataset's condition id and sample index).
    """
    device = torch.device(device)
    record = {
        "schema": SCHEMA,
        "synthetic": True,
        "bundle": dict(bundle),
        "prompt": prompt,
        "anatomy": None if anatomy is None else dict(anatomy),
        "pathology": None if pathology is None else dict(pathology),
        "sampling": {
            **settings,
            "seed": int(batch_seeds[batch_index]),
            "batch_seeds": [int(s) for s in batch_seeds],
            "batch_index": int(batch_index),
        },  # fmt: skip
        "device": device.type,
        # CPU kernels split their sums by thread: the count changes the last bits of the pixels
        "cpu_threads": torch.get_num_threads(),
        "software": software_versions(),
    }
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
    if created is not None:
        record["created"] = created.isoformat(timespec="seconds")
    return {**record, **dict(extra or {})}


def read_provenance(path: str | Path) -> dict:
    """A provenance sidecar (or any JSON with the record), checked for the fields :func:`reproduce` needs."""
    path = Path(path)
    if not path.is_file():
        raise XRealInputError("from-provenance", f"no such file: {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise XRealInputError("from-provenance", f"{path} is not valid JSON: {err}") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise XRealInputError("from-provenance", f"{path} is not a {SCHEMA} record")
    sampling = record.get("sampling")
    needed = ("seed", "batch_seeds", "batch_index", "scheduler", "num_inference_steps", "guidance_scale", "eta")
    if not isinstance(sampling, dict) or any(key not in sampling for key in needed):
        raise XRealInputError("from-provenance", f"{path}: 'sampling' needs {list(needed)}")
    if not isinstance(record.get("bundle"), dict) or "weights" not in record["bundle"]:
        raise XRealInputError("from-provenance", f"{path}: 'bundle' with its 'weights' is missing")
    return record


def reproduce(
    record: Mapping,
    bundle_root: str | Path | None = None,
    device: torch.device | str | None = None,
    base_dir: str | Path = ".",
    source: str | Path | None = None,
):
    """Sample the image a record describes again.

    Args:
        record: :func:`read_provenance`.
        bundle_root: the bundle folder (default: the recorded one); its weight files must match the record.
        device: default: the recorded device.
        base_dir: the folder relative mask paths start from (the sidecar's: datasets record them relatively).
        source: the sidecar the record was read from (recorded as ``reproduces``).

    Returns:
        ``(generated, service)``: the :class:`~monai_xreal.synthesis.service.Generated` image ``(1, H, W)`` in
        [0, 1] with its new record (``reproduces`` naming the original), and the service that made it.

    Raises:
        XRealInputError: a weight or mask file that is missing or differs from the recorded SHA-256 (named).
    """
    from monai_xreal.pipeline import SamplingSettings, XRealPipeline
    from monai_xreal.synthesis.service import Condition, Generated, GenerationService, Sample

    root = Path(bundle_root) if bundle_root is not None else Path(record["bundle"]["path"])
    if not (root / "configs").is_dir():
        raise XRealInputError("bundle", f"missing bundle folder {root} (pass --bundle)")
    device = torch.device(device if device is not None else record["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise XRealInputError("device", f"the image was made on {device}, which this machine lacks (pass --device)")
    overrides = {"report_adapter": True} if record.get("report_adapter") else None  # as generate --report chose
    pipe = XRealPipeline.from_bundle(root, device=device, overrides=overrides)
    found = bundle_record(pipe, root)["weights"]
    for name, digest in record["bundle"]["weights"].items():
        if found.get(name) != digest:
            state = "is missing" if name not in found else f"has SHA-256 {found[name][:12]}…"
            raise XRealInputError("bundle", f"{root / name if name.startswith('models/') else name} {state}; "
                                  f"the image was made with {digest[:12]}…")  # fmt: skip
    base_dir = Path(base_dir)
    masks = {key: _recorded_mask(record.get(key), key, base_dir) for key in ("anatomy", "pathology")}
    records = {}
    for key in ("anatomy", "pathology"):  # relative mask paths (datasets') start from the original sidecar
        entry = record.get(key)
        if entry is not None and "file" in entry:
            entry = {**entry, "file": str((base_dir / entry["file"]).resolve())}
        records[key] = entry
    sampling = record["sampling"]
    extra = {key: record[key] for key in ("report", "dataset", "report_adapter", "demographics") if key in record}
    condition = Condition(masks["anatomy"], masks["pathology"], record.get("prompt", ""), records["anatomy"],
                          records["pathology"], extra)  # fmt: skip
    service = GenerationService(pipe, record["bundle"], SamplingSettings.from_record(sampling), pipe.device)
    seeds, index = sampling["batch_seeds"], int(sampling["batch_index"])
    threads = torch.get_num_threads()
    if device.type == "cpu" and record.get("cpu_threads"):
        torch.set_num_threads(int(record["cpu_threads"]))
    try:
        image = service.sample(condition, seeds)[index]
    finally:
        torch.set_num_threads(threads)
    again = service.record(
        condition, image, seeds, index, {"reproduces": str(Path(source).resolve())} if source else {}
    )
    return Generated(image, again, Sample(int(sampling["seed"]))), service


def _recorded_mask(entry: Mapping | None, key: str, base_dir: Path) -> torch.Tensor | None:
    if entry is None:
        return None
    path = base_dir / entry.get("file", "")
    if not path.is_file():
        raise XRealInputError(key, f"the recorded mask file {path} is missing")
    if sha256_file(path) != entry["sha256"]:
        raise XRealInputError(key, f"{path} has changed since the image was made (SHA-256 differs)")
    return load_mask(path, key)
