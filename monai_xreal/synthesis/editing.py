# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Editing a radiograph file: one or more region edits (:meth:`XRealPipeline.edit`), written back into the file's
own container with its provenance. Used by ``monai-xreal edit``, the ``xreal_edit`` Label task and the bundle's
``edit.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from monai_xreal.errors import XRealInputError
from monai_xreal.io.dicom import DicomIdentity, dicom_uid
from monai_xreal.io.hashing import sha256_array, sha256_file
from monai_xreal.io.radiograph import Radiograph, write_radiograph
from monai_xreal.pipeline.settings import EDIT_KNOBS, SamplingSettings
from monai_xreal.synthesis.provenance import make_provenance, mask_record
from monai_xreal.synthesis.writer import SyntheticImageWriter, remove_partials, sidecar_path, staged_files

__all__ = ["EditedRadiograph", "RegionEdit", "edit_file", "edit_radiograph", "region_record", "write_edit"]


@dataclass(frozen=True)
class RegionEdit:
    """One edit: where (a ``(1, X, Y)`` binary mask of the radiograph's size; boxes become one with
    ``BoxesToMask``) and what (a finding to paint, or ``"No Finding"`` to remove one); ``record`` says where the
    region came from (:func:`region_record`)."""

    region: torch.Tensor
    prompt: str
    record: Mapping | None = None


@dataclass(frozen=True)
class EditedRadiograph:
    """The result: ``image`` ``(1, X, Y)`` in [0, 1], ``stored`` ``(X, Y)`` in the file's dtype, the ``region``
    ``(X, Y)`` the edits were allowed to change (their regions, less the keep mask), the ``changed`` mask ``(X, Y)``
    (the pixels whose value the edits changed, all inside ``region``) and the provenance ``record``."""

    image: torch.Tensor
    stored: np.ndarray
    region: np.ndarray
    changed: np.ndarray
    record: dict


def edit_radiograph(
    pipe,
    radiograph: Radiograph,
    edits: Sequence[RegionEdit],
    settings: SamplingSettings,
    bundle: Mapping,
    seed: int,
    keep: torch.Tensor | None = None,
    keep_record: Mapping | None = None,
    progress: bool = False,
) -> EditedRadiograph:
    """Apply ``edits`` in order to ``radiograph`` (each on the previous one's result, all with ``seed``).

    Outside the union of the regions (minus ``keep``) the stored values are the file's own, bit for bit; inside,
    the edited [0, 1] values go back through the file's intensity mapping (:meth:`Radiograph.to_stored`).

    Args:
        pipe: an :class:`~monai_xreal.pipeline.XRealPipeline`.
        radiograph: the file, from :func:`~monai_xreal.io.radiograph.read_radiograph`.
        edits: one or more region edits.
        settings: the resolved sampling knobs (``pipe.settings(...)``).
        bundle: :func:`~monai_xreal.synthesis.provenance.bundle_record` of ``pipe``'s bundle.
        seed: the random seed of every edit.
        keep: ``(1, X, Y)`` mask that must not change.
        keep_record: where ``keep`` came from, for the record.
        progress: show the sampling steps.

    Raises:
        XRealInputError: no edit, or an edit's region that does not fit the image (see ``PrepareEdit``).
    """
    if not edits:
        raise XRealInputError("region", "give at least one edit region")
    shape = tuple(radiograph.image.shape[1:])
    image = radiograph.image.as_tensor()[None].to(pipe.device)
    allowed = torch.zeros((1, 1, *shape), dtype=torch.bool, device=pipe.device)
    for edit in edits:
        region = torch.as_tensor(edit.region).float().reshape(1, *edit.region.shape[-2:]).to(pipe.device)
        image = pipe.edit(image, region[None], edit.prompt, keep=None if keep is None else keep[None], seed=seed,
                          scheduler=settings.scheduler, progress=progress, **_edit_knobs(settings)).as_tensor()  # fmt: skip
        inside = region[None] > 0
        allowed |= inside if keep is None else inside & ~(keep[None].to(pipe.device) > 0)
    image = image[0].cpu()
    # the stored values go back through the inverse mapping only where the edit changed the [0, 1] value: where the
    # file's window clips, several stored values share one [0, 1] value and the file's own is kept
    region = allowed[0, 0].cpu().numpy()
    changed = region & (image[0] != radiograph.image[0]).numpy()
    stored = np.where(changed, radiograph.to_stored(image), radiograph.stored)
    record = make_provenance(
        bundle, "; ".join(edit.prompt for edit in edits), None, (edits[0].record if len(edits) == 1 else None),
        settings.as_dict(), [seed], 0, pipe.device, datetime.now(timezone.utc),
        extra={"edit": {
            "source": {"file": str(radiograph.path.resolve()), "sha256": sha256_file(radiograph.path),
                       "format": radiograph.fmt, "shape": list(shape)},
            "edits": [{"prompt": edit.prompt, "region": dict(edit.record) if edit.record else None} for edit in edits],
            "keep": None if keep_record is None else dict(keep_record),
            "changed_pixels": int((stored != radiograph.stored).sum()),
            "unchanged_outside_region": bool(np.array_equal(stored[~region], radiograph.stored[~region])),
        }},
    )  # fmt: skip
    record["image_sha256"] = sha256_array(stored)
    return EditedRadiograph(image, stored, region, changed, record)


def _edit_knobs(settings: SamplingSettings) -> dict:
    knobs = settings.knobs()
    return {name: knobs[name] for name in EDIT_KNOBS}


def region_record(path: str | Path | None, region, boxes: Sequence | None = None) -> dict:
    """A region's record: its file (with digests) or its boxes."""
    if boxes is not None:
        return {"boxes": [[float(v) for v in box] for box in boxes]}
    return mask_record(path, torch.as_tensor(region))


def write_edit(
    edited: EditedRadiograph, radiograph: Radiograph, folder: str | Path, stem: str, fmt: str | None = None
) -> tuple[Path, Path]:
    """Write the edited radiograph as ``folder/<stem><ext>`` and its sidecar ``<stem>.json``.

    In the input's own format (``fmt`` ``None`` or the same) the file is the original container with the edited
    pixels (:func:`~monai_xreal.io.radiograph.write_radiograph`); another format is written as a generated image
    is (8-bit PNG, float NIfTI, synthetic Secondary Capture), from the [0, 1] image.

    Returns:
        ``(image file, sidecar)``.
    """
    from monai_xreal.io.formats import IMAGE_FORMATS

    folder = Path(folder)
    fmt = fmt or radiograph.fmt
    if fmt not in IMAGE_FORMATS:
        raise XRealInputError("format", f"{fmt!r} is not one of {sorted(IMAGE_FORMATS)}")
    if fmt != radiograph.fmt:
        identity = DicomIdentity(dicom_uid(), dicom_uid(), dicom_uid(), datetime.now(timezone.utc))
        written = SyntheticImageWriter(fmt).write(edited.image, folder, stem, edited.record, identity)
        return written.path, written.sidecar
    name = f"{stem}{IMAGE_FORMATS[fmt]}"
    prompts = "; ".join(e["prompt"] or "no prompt" for e in edited.record["edit"]["edits"])
    with staged_files(folder) as staged:  # the pair complete or absent, the sidecar first
        image = write_radiograph(radiograph, edited.stored, staged.folder / name, edited.record, description=prompts)
        output = {"file": name, "format": fmt, "sha256": sha256_file(image)}
        sidecar = staged.folder / f"{stem}.json"
        sidecar.write_text(json.dumps({**edited.record, "output": output}, indent=2, ensure_ascii=False) + "\n",
                           encoding="utf-8")  # fmt: skip
        staged.move(sidecar, folder / sidecar.name)
        staged.move(image, folder / name)
    return folder / name, folder / sidecar.name


def edit_file(
    pipe,
    image: str | Path,
    output_dir: str | Path,
    regions: Sequence[str | Path] = (),
    boxes: Sequence[Sequence[Sequence[float]]] = (),
    prompts: str | Sequence[str] = "",
    keep: str | Path | None = None,
    seeds: Sequence[int] = (0,),
    fmt: str | None = None,
    bundle_root: str | Path | None = None,
    scheduler: str | None = None,
    sampling: Mapping | None = None,
    progress: bool = True,
) -> list[tuple[Path, EditedRadiograph | None]]:
    """Edit a radiograph file once per seed into ``output_dir`` (``<stem>_edit_seed<seed><ext>`` and its sidecar);
    versions already there are skipped, so an interrupted run continues. What ``monai-xreal edit`` and the bundle's
    ``edit.json`` run.

    Args:
        pipe: an :class:`~monai_xreal.pipeline.XRealPipeline`.
        image: the radiograph (DICOM, PNG or NIfTI).
        output_dir: where the edits go.
        regions: edit region mask files of the image's size; each is one edit.
        boxes: more edits, each ``(N, 4)`` boxes ``(x0, y0, x1, y1)`` in the image's pixels (after the masks).
        prompts: one prompt for every edit, or one per edit.
        keep: a mask file of what must not change.
        seeds: one edited version per seed.
        fmt: output format (default: the image's own, bit-exact outside the regions).
        bundle_root: ``pipe``'s bundle, for the provenance (``None``: the embedded one).
        scheduler, sampling: the sampler and knobs (:data:`~monai_xreal.pipeline.settings.EDIT_KNOBS`; unset: the
            bundle's defaults).
        progress: show the sampling steps.

    Returns:
        ``(path, edited)`` per seed; ``edited`` is ``None`` for a version a previous run wrote.

    Raises:
        XRealInputError: an unreadable image or mask, a region that does not fit, no region, or prompts that do
            not match the edits, before anything is written.
    """
    from monai_xreal.io import IMAGE_FORMATS, load_mask, read_radiograph
    from monai_xreal.synthesis.provenance import bundle_record
    from monai_xreal.transforms import BoxesToMask

    radiograph = read_radiograph(image)
    shape = tuple(radiograph.image.shape[1:])
    masks = [(path, load_mask(path, "region")) for path in regions]
    found = [(mask, region_record(path, mask)) for path, mask in masks]
    found += [(BoxesToMask(shape)(np.asarray(b, np.float32)), region_record(None, None, b)) for b in boxes]
    if not found:
        raise XRealInputError("region", "give an edit region: a mask or boxes")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts) or [""]
    if len(prompts) not in (1, len(found)):
        raise XRealInputError("prompt", f"give one prompt for all edits or one per edit ({len(found)}), got "
                              f"{len(prompts)}")  # fmt: skip
    edits = [RegionEdit(mask, prompts[0] if len(prompts) == 1 else prompts[i], record)
             for i, (mask, record) in enumerate(found)]  # fmt: skip
    for edit in edits:
        if tuple(edit.region.shape[-2:]) != shape:
            raise XRealInputError("region", f"shape {tuple(edit.region.shape[-2:])} differs from the image's {shape}")
    keep_mask = None if keep is None else load_mask(keep, "keep")
    if fmt is not None and fmt not in IMAGE_FORMATS:
        raise XRealInputError("format", f"{fmt!r} is not one of {sorted(IMAGE_FORMATS)}")
    settings = pipe.settings(scheduler, **{k: v for k, v in dict(sampling or {}).items() if k in EDIT_KNOBS})
    bundle = bundle_record(pipe, bundle_root)
    if Path(output_dir).is_dir():
        remove_partials(output_dir)  # what a killed run left half-written
    stem, ext = sidecar_path(image).stem, IMAGE_FORMATS[fmt or radiograph.fmt]  # the name less its image extension
    results = []
    for seed in seeds:
        path = Path(output_dir) / f"{stem}_edit_seed{seed}{ext}"
        if path.is_file() and sidecar_path(path).is_file():
            _check_same_request(sidecar_path(path), radiograph, edits, keep_mask, keep, settings, bundle, int(seed))
            results.append((path, None))
            continue
        edited = edit_radiograph(pipe, radiograph, edits, settings, bundle, int(seed), keep_mask,
                                 mask_record(keep, keep_mask) if keep is not None else None, progress)  # fmt: skip
        written, _ = write_edit(edited, radiograph, output_dir, path.name[: -len(ext)], fmt)
        results.append((written, edited))
    return results


def _check_same_request(sidecar: Path, radiograph: Radiograph, edits, keep_mask, keep, settings, bundle, seed) -> None:
    """A version already written is skipped only if it was made from this very request (source file, edits, keep
    mask, model, knobs and seed); anything else is refused rather than silently kept or overwritten."""
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        made = record["edit"]
        found = {"source": made["source"]["sha256"], "edits": made["edits"], "keep": made["keep"],
                 "model": record["bundle"]["model_sha256"],
                 "sampling": {k: record["sampling"].get(k) for k in (*settings.as_dict(), "seed")}}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        found = None
    wanted = {"source": sha256_file(radiograph.path),
              "edits": [{"prompt": e.prompt, "region": dict(e.record) if e.record else None} for e in edits],
              "keep": None if keep_mask is None else mask_record(keep, keep_mask), "model": bundle["model_sha256"],
              "sampling": {**settings.as_dict(), "seed": seed}}  # fmt: skip
    if json.loads(json.dumps(found)) != json.loads(json.dumps(wanted)):
        raise XRealInputError(str(sidecar.with_suffix("")), "is already there, made from another request (image, "
                              "regions, prompts, knobs, seed or model): remove it or choose another --output-dir")  # fmt: skip
