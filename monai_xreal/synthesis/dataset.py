# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Large synthetic datasets: K samples per condition, sharded over processes, resumable, identical however run.

The work is cut into units (one condition, ``batch_size`` consecutive sample indices) that do not depend on the
number of processes; rank ``r`` of ``w`` takes units ``r, r + w, ...``. Sample ``k`` of condition ``c`` has the
seed :func:`sample_seed` ``(seed, c.id, c.seed, k)`` and is always sampled in the same batch, so its pixels do not
depend on the number of ranks, on restarts or on which samples were already done. Layout::

    dataset.json                      settings, checked on restart; the dataset's DICOM UID root and date
    manifest.jsonl                    one line per finished image (condition_id, sample_index, seed, file, sha256;
                                      with --exclude-copies-of, "copies": the tries that copied a training image,
                                      and "dropped": true, file null, for a sample whose every try did)
    datalist.json                     MONAI datalist {"training": [{"image", "anatomy", "pathology", "prompt"...}]}
    conditions/<id>/anatomy.<ext>     the condition's masks, copied so the dataset stands alone
    images/<id>/<id>_s<k>.<ext>       the images, each with its provenance sidecar <id>_s<k>.json
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path

import torch
from tqdm.auto import tqdm

from monai_xreal.data import load_conditions
from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_mask
from monai_xreal.io.atomic import atomic_path
from monai_xreal.io.dicom import DicomIdentity, dicom_uid
from monai_xreal.io.hashing import sha256_file
from monai_xreal.memorisation.search import DEFAULT_THRESHOLD
from monai_xreal.seeding import dataset_seed, next_seed
from monai_xreal.synthesis.manifest import Manifest, write_atomically
from monai_xreal.synthesis.provenance import bundle_record, mask_record
from monai_xreal.synthesis.service import Condition, Generated, GenerationService, Sample
from monai_xreal.synthesis.writer import IMAGE_FORMATS, SyntheticImageWriter, remove_partials, sidecar_path
from monai_xreal.text.demographics import DEMOGRAPHIC_FIELDS, balanced_demographics, condition_prompt

__all__ = [
    "MAX_REGENERATIONS",
    "DatasetSpec",
    "WorkUnit",
    "balanced_conditions",
    "generate_dataset",
    "plan_units",
    "sample_seed",
]

SCHEMA = "monai_xreal.dataset/1"
MAX_REGENERATIONS = 3  # a sample that copies a training image is made again with the next seed this often at most


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate. ``knobs`` are the pipeline's sampling knobs (``None``: the bundle's default).

    ``cpu_threads`` is the torch thread count of each process on CPU: CPU kernels split sums by thread, so it
    is fixed for the whole dataset (like the batch size) for the pixels not to depend on how the run was split.

    ``balance_demographics``: groupings (``sex``, ``age_group``, ``race``, ``view``): every condition is made once per
    combination of their groups (:func:`balanced_conditions`), ``samples_per_condition`` images each, so a fairness
    study gets the same number of images in every group.

    ``exclude_copies_of``: a training datalist; a sample whose copy score against its images
    (:class:`~monai_xreal.memorisation.CopyDetector`) reaches ``copy_threshold`` is made again with the next seed
    (alone, as a batch of one), up to :data:`MAX_REGENERATIONS` times, then dropped; the manifest records each try.
    """

    conditions: Path
    samples_per_condition: int
    output_dir: Path
    bundle: Path | None = None
    fmt: str = "png"
    batch_size: int = 4
    seed: int = 0
    knobs: Mapping[str, float | None] = field(default_factory=dict)
    scheduler: str | None = None
    patient_name: str = "SYNTHETIC^CXR"
    patient_id: str = "SYNTHETIC"
    data_root: Path | None = None
    cpu_threads: int = 1
    exclude_copies_of: Path | None = None
    copy_threshold: float = DEFAULT_THRESHOLD
    balance_demographics: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkUnit:
    condition: int  # index in the datalist
    samples: tuple[int, ...]


sample_seed = dataset_seed  # the seed scheme lives in monai_xreal.seeding


def balanced_conditions(conditions: list[dict], by: Sequence[str]) -> list[dict]:
    """Each condition once per combination of the groups of ``by``
    (:func:`~monai_xreal.text.demographics.balanced_demographics`), its id suffixed with the group (``c1__female_49``)
    and the group's values over any it had.

    Raises:
        XRealInputError: an unknown grouping.
    """
    combos = balanced_demographics(by)
    expanded = []
    for condition in conditions:
        for combo in combos:
            values = {**condition.get("demographics", {}), **combo.as_dict()}
            suffix = "_".join(str(values[f]).replace("/", "-") for f in DEMOGRAPHIC_FIELDS if f in combo.as_dict())
            expanded.append({**condition, "id": f"{condition['id']}__{suffix}", "demographics": values})
    return expanded


def plan_units(
    num_conditions: int, samples_per_condition: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[WorkUnit]:
    """Rank ``rank``'s (condition, batch of sample indices) units of ``world_size``, in datalist order, drawn
    lazily (a request of any size plans in constant memory)."""
    index = 0
    for c in range(num_conditions):
        for s in range(0, samples_per_condition, batch_size):
            if index % world_size == rank:
                yield WorkUnit(c, tuple(range(s, min(s + batch_size, samples_per_condition))))
            index += 1


def generate_dataset(
    spec: DatasetSpec,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> dict:
    """Generate this rank's share of the dataset; rank 0 then writes the canonical manifest and the datalist.

    Args:
        spec: the dataset.
        device: this rank's device.
        rank, world_size: this process among those sharing the work (``torch.distributed``'s).
        barrier: waits for every rank (``torch.distributed.barrier``; nothing for one process).

    Returns:
        ``{"generated", "skipped", "images", "regenerated", "dropped"}``: samples made by this rank, samples found
        finished, dataset size (on rank 0: without the dropped samples), and of this rank's samples those made again
        or dropped as copies of ``spec.exclude_copies_of`` images.
    """
    from monai_xreal.pipeline import XRealPipeline

    _check(spec)
    conditions = load_conditions(spec.conditions, base_seed=spec.seed, root=spec.data_root)
    if spec.balance_demographics:
        conditions = balanced_conditions(conditions, spec.balance_demographics)
    if torch.device(device).type == "cpu":
        torch.set_num_threads(spec.cpu_threads)  # part of the result: see DatasetSpec
    pipe = XRealPipeline.from_bundle(spec.bundle, device=device)
    for condition in conditions:  # every bad condition fails here, before anything is written
        _check_condition(pipe, condition)
    detector = None
    if spec.exclude_copies_of is not None:  # the training set's features, once (a bad datalist fails here too)
        from monai_xreal.memorisation import CopyDetector

        detector = CopyDetector.from_datalist(spec.exclude_copies_of, threshold=spec.copy_threshold,
                                              progress=rank == 0)  # fmt: skip
    settings = pipe.settings(spec.scheduler, **spec.knobs)
    settings_record = _settings(spec, settings.as_dict(), bundle_record(pipe, spec.bundle), torch.device(device))
    out = spec.output_dir
    if rank == 0:
        _prepare(out, settings_record, conditions)
    barrier()
    info = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    manifest = Manifest(out / "manifest.jsonl")
    finished = manifest.entries()
    writer = SyntheticImageWriter(spec.fmt)
    service = GenerationService(pipe, info["bundle"], settings, device)
    created = datetime.fromisoformat(info["created"])
    counts = {"generated": 0, "skipped": 0, "regenerated": 0, "dropped": 0}

    def done(sample: Sample) -> bool:
        key = sample.extra["dataset"]
        finished_before = _is_finished(out, finished.get((key["condition_id"], key["sample_index"])))
        counts["skipped"] += finished_before
        bar.update(finished_before)
        return finished_before

    total = -(-len(conditions) * spec.samples_per_condition // world_size)  # this rank's share, about
    units = plan_units(len(conditions), spec.samples_per_condition, spec.batch_size, rank, world_size)
    with tqdm(total=total, unit="image", desc="generating", disable=rank != 0) as bar:
        for condition_index, group in groupby(units, key=lambda unit: unit.condition):  # streamed, one condition
            record = conditions[condition_index]
            batches = ([_sample(out, info, spec, record, condition_index, k, created) for k in unit.samples]
                       for unit in group)  # fmt: skip
            condition = _condition(out, record)
            for generated in service.generate(condition, batches, done):
                k = generated.sample.extra["dataset"]["sample_index"]
                entry = {"condition_id": record["id"], "sample_index": k}
                if detector is not None:
                    generated, copies = _without_copies(service, condition, generated, detector)
                    entry["copies"] = copies
                    counts["regenerated"] += bool(copies) and generated is not None
                if generated is None:
                    entry |= {"seed": None, "file": None, "sha256": None, "dropped": True}
                    counts["dropped"] += 1
                else:
                    written = service.write(generated, writer)
                    entry |= {"seed": generated.sample.seed, "file": written.path.relative_to(out).as_posix(),
                              "sha256": written.sha256}  # fmt: skip
                    counts["generated"] += 1
                manifest.append(entry)
                bar.update(1)
    barrier()
    images = len(conditions) * spec.samples_per_condition
    if rank == 0:
        images = _finalize(out, conditions, spec.samples_per_condition)
    return {**counts, "images": images}


def _without_copies(service: GenerationService, condition: Condition, generated: Generated,
                    detector) -> tuple[Generated | None, list[dict]]:  # fmt: skip
    """``generated``, or the first of its remakes with the next seeds (each alone, a batch of one, as its record
    says) that copies no training image; ``None`` when all :data:`MAX_REGENERATIONS` remakes do too. Also returns
    the tries that were copies: their seed, copy score and nearest training image."""
    copies = []
    for remake in range(MAX_REGENERATIONS + 1):
        check = detector.check(generated.image[None])[0]
        if not check.flagged:
            return generated, copies
        copies.append({"seed": generated.sample.seed, "score": round(check.score, 4),
                       "nearest": check.nearest.image, "similarity": round(check.nearest.similarity, 4)})  # fmt: skip
        if remake == MAX_REGENERATIONS:
            break
        seed = next_seed(generated.sample.seed)
        image = service.sample(condition, [seed])[0]
        sample = replace(generated.sample, seed=seed)
        generated = Generated(image, service.record(condition, image, [seed], 0, sample.extra), sample)
    return None, copies


def _check(spec: DatasetSpec) -> None:
    for name in ("samples_per_condition", "batch_size", "cpu_threads"):
        if getattr(spec, name) < 1:
            raise XRealInputError(name.replace("_", "-"), f"must be a positive integer, got {getattr(spec, name)}")
    if spec.seed < 0:
        raise XRealInputError("seed", f"must be a non-negative integer, got {spec.seed}")
    if spec.fmt not in IMAGE_FORMATS:
        raise XRealInputError("format", f"must be one of {sorted(IMAGE_FORMATS)}, got {spec.fmt!r}")
    if spec.output_dir.exists() and not spec.output_dir.is_dir():
        raise XRealInputError("output-dir", f"{spec.output_dir} is not a folder")


def _check_condition(pipe, condition: Mapping) -> None:
    """The condition's masks and prompt, checked as the pipeline will check them (errors name the condition)."""
    masks = {key: load_mask(condition[key], f"{condition['id']}.{key}") if key in condition else None
             for key in ("anatomy", "pathology")}  # fmt: skip
    try:
        pipe.prepare_conditions(masks["anatomy"], masks["pathology"], condition_prompt(condition))
    except XRealInputError as err:
        raise XRealInputError(f"conditions[{condition['id']}].{err.argument}", err.message) from None


def _settings(spec: DatasetSpec, settings: Mapping, bundle: Mapping, device: torch.device) -> dict:
    """What must be equal for a restart to continue a dataset (and be recorded with it)."""
    return {
        "schema": SCHEMA,
        "conditions_sha256": sha256_file(spec.conditions),
        "samples_per_condition": spec.samples_per_condition,
        "batch_size": spec.batch_size,
        "seed": spec.seed,
        "format": spec.fmt,
        "sampling": dict(settings),
        "bundle": dict(bundle),
        "patient": {"name": spec.patient_name, "id": spec.patient_id},
        "device": device.type,
        "cpu_threads": spec.cpu_threads if device.type == "cpu" else None,
        "balance_demographics": list(spec.balance_demographics) or None,
        "exclude_copies": None if spec.exclude_copies_of is None else {
            "training_sha256": sha256_file(spec.exclude_copies_of), "threshold": spec.copy_threshold,
            "regenerations": MAX_REGENERATIONS,
        },
    }  # fmt: skip


def _prepare(out: Path, settings: dict, conditions: list[dict]) -> None:
    """Rank 0, before any rank writes: start or check ``dataset.json``, repair the journal, copy the masks."""
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "dataset.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        differing = [k for k in settings if k != "bundle" and info.get(k) != settings[k]]
        if info.get("bundle", {}).get("model_sha256") != settings["bundle"]["model_sha256"]:
            differing.append("bundle weights")
        if differing:
            differs = ", ".join(differing)
            raise XRealInputError("output-dir", f"{out} holds a dataset made with other settings ({differs}"
                                  "); continue it with the same options or choose another --output-dir")  # fmt: skip
    else:
        # the dataset's own identity: its DICOM UIDs derive from uid_root, its files carry this date
        info = {**settings, "uid_root": uuid.uuid4().hex,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
        write_atomically(info_path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    Manifest(out / "manifest.jsonl").repair()
    remove_partials(out)
    for condition in conditions:
        for key in ("anatomy", "pathology"):
            if key in condition:
                target = out / _mask_copy(condition, key)
                if not target.is_file() or sha256_file(target) != sha256_file(condition[key]):
                    with atomic_path(target) as temporary:
                        shutil.copyfile(condition[key], temporary)


def _mask_copy(condition: Mapping, key: str) -> str:
    """``conditions/<id>/<key><ext>``: where the dataset keeps a condition's mask."""
    name = Path(condition[key]).name.lower()
    ext = ".nii.gz" if name.endswith(".nii.gz") else Path(condition[key]).suffix
    return f"conditions/{condition['id']}/{key}{ext}"


def _condition(out: Path, condition: Mapping) -> Condition:
    """The condition with its masks (from the dataset's copies) and their records, paths relative to the sidecar."""
    masks, records = {}, {}
    for key in ("anatomy", "pathology"):
        if key not in condition:
            masks[key] = records[key] = None
            continue
        copy = out / _mask_copy(condition, key)
        masks[key] = load_mask(copy, f"{condition['id']}.{key}")
        records[key] = mask_record(copy, masks[key])
        records[key]["file"] = f"../../{_mask_copy(condition, key)}"  # from images/<id>/, so the dataset can move
    extra = {"demographics": dict(condition["demographics"])} if condition.get("demographics") else {}
    return Condition(masks["anatomy"], masks["pathology"], condition_prompt(condition), records["anatomy"],
                     records["pathology"], extra)  # fmt: skip


def _sample(out: Path, info: Mapping, spec: DatasetSpec, condition: Mapping, index: int, k: int, created) -> Sample:
    """Sample ``k`` of condition ``index``: its seed, file and DICOM identity (derived from the dataset's UID root,
    so a restarted run gives it the UIDs an uninterrupted one would)."""
    root, cid = info["uid_root"], condition["id"]
    identity = DicomIdentity(
        dicom_uid(root, "study"), dicom_uid(root, "series", cid), dicom_uid(root, "instance", cid, k), created,
        spec.patient_name, spec.patient_id, instance_number=k + 1, series_number=index + 1,
    )  # fmt: skip
    return Sample(sample_seed(spec.seed, cid, condition["seed"], k), f"{cid}_s{k:05d}", out / "images" / cid,
                  extra={"dataset": {"condition_id": cid, "sample_index": k}}, identity=identity)  # fmt: skip


def _is_finished(out: Path, entry: Mapping | None) -> bool:
    """A journal line whose file and sidecar exist and whose file has the recorded SHA-256, or a dropped sample."""
    if entry is None:
        return False
    if entry.get("dropped"):
        return True
    path = out / entry["file"]
    return path.is_file() and sidecar_path(path).is_file() and sha256_file(path) == entry["sha256"]


def _finalize(out: Path, conditions: list[dict], samples_per_condition: int) -> int:
    """The manifest in datalist order, without superseded lines, and the MONAI datalist (without dropped samples);
    returns the number of images."""
    manifest = Manifest(out / "manifest.jsonl")
    entries = manifest.entries()
    ordered, training = [], []
    for condition in conditions:
        for k in range(samples_per_condition):
            entry = entries.get((condition["id"], k))
            if entry is None:
                raise RuntimeError(f"sample {k} of {condition['id']!r} is missing from {manifest.path} after the run")
            ordered.append(entry)
            if entry.get("dropped"):
                continue
            item = {"image": entry["file"], "prompt": condition["prompt"], "condition_id": condition["id"],
                    "sample_index": k, "seed": entry["seed"]}  # fmt: skip
            item |= {key: _mask_copy(condition, key) for key in ("anatomy", "pathology") if key in condition}
            if condition.get("demographics"):
                item["demographics"] = dict(condition["demographics"])
            training.append(item)
    manifest.rewrite(ordered)
    write_atomically(out / "datalist.json", json.dumps({"training": training}, indent=2, ensure_ascii=False) + "\n")
    return len(training)
