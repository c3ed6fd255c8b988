# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal generate``: CXRs from an anatomy mask, a pathology mask and a prompt, each with its provenance."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from monai_xreal.cli.options import (
    add_demographic_options,
    add_sampling_options,
    demographics_of,
    non_negative_int,
    output_folder,
    positive_int,
    sampling_knobs,
)
from monai_xreal.errors import XRealInputError

HELP = "generate CXRs that follow an anatomy mask, a pathology mask and a prompt"
_LISTED = 50  # files listed one by one at the end (beyond that, only counted)
_GRID_IMAGES = 8


def add_parser(commands) -> None:
    p = commands.add_parser("generate", help=HELP, description=HELP + ". Each image gets a JSON sidecar saying "
                            "how it was made; --from-provenance makes it again. Images are written as they are "
                            "finished: an interrupted run keeps them and the same command continues it.")  # fmt: skip
    p.add_argument("--anatomy", type=Path, help="anatomy label map (PNG, NIfTI or DICOM)")
    p.add_argument("--pathology", type=Path, help="pathology mask, 1 where the finding goes, the anatomy map's size "
                   "(PNG, NIfTI or DICOM)")  # fmt: skip
    p.add_argument("--prompt", default="", help="finding or report text, e.g. 'Cardiomegaly' (default: empty)")
    p.add_argument("--report", type=Path, default=None, help="a report file (IU X-ray XML, MIMIC-CXR .txt or plain "
                   "text) whose FINDINGS and IMPRESSION are the prompt; instead of --prompt")  # fmt: skip
    add_demographic_options(p)
    p.add_argument("--num-images", type=positive_int, default=1, help="images to generate (seeds SEED, SEED+1, ...)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first image (default: 0)")
    add_sampling_options(p)
    p.add_argument("--output-dir", type=output_folder, required=True, help="folder for the images and their sidecars")
    p.add_argument("--prefix", default="xreal", help="file name prefix (default: xreal)")
    p.add_argument("--grid", type=Path, default=None, metavar="FILE.png",
                   help=f"also write a PNG of the first {_GRID_IMAGES} images, each beside its overlay of the "
                   "requested masks")  # fmt: skip
    p.add_argument("--from-provenance", type=Path, default=None, metavar="FILE",
                   help="make the image a sidecar describes again (same bundle weights and masks, checked by "
                   "SHA-256); --bundle and --device override the recorded ones")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict:
    """Generate ``--num-images`` images into ``--output-dir``, skipping those a previous run finished.

    Returns:
        ``{"written", "skipped", "output_dir"}``.
    """
    if args.from_provenance is not None:
        return replay(args)
    if args.grid is not None and (args.grid.suffix.lower() != ".png" or not args.grid.parent.is_dir()):
        raise XRealInputError("grid", f"must be a .png path in an existing folder, got {args.grid}")
    service, condition = _prepare(args)
    return _generate(args, service, condition)


def _prepare(args: argparse.Namespace):
    """Everything that can fail on bad input, before anything is written: masks, report, bundle, settings."""
    import torch

    from monai_xreal.io import load_mask
    from monai_xreal.io.hashing import sha256_file
    from monai_xreal.pipeline import XRealPipeline
    from monai_xreal.synthesis.provenance import bundle_record, mask_record
    from monai_xreal.synthesis.service import Condition, GenerationService
    from monai_xreal.text.demographics import with_demographics

    report = None
    if args.report is not None:
        from monai_xreal.data.reports import read_report_prompt

        if args.prompt:
            raise XRealInputError("report", "give --report or --prompt, not both")
        args.prompt = read_report_prompt(args.report)
        report = {"file": str(args.report.resolve()), "sha256": sha256_file(args.report)}
    demographics = demographics_of(args)
    prompt = with_demographics(args.prompt, demographics)
    anatomy = None if args.anatomy is None else load_mask(args.anatomy, "anatomy")
    pathology = None if args.pathology is None else load_mask(args.pathology, "pathology")
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = XRealPipeline.from_bundle(args.bundle, device=device, overrides=report_overrides(args.bundle, report))
    settings = pipe.settings(args.scheduler, **sampling_knobs(args))
    pipe.prepare_conditions(anatomy, pathology, prompt)  # every bad input fails here, before any work
    extra = {"report_adapter": pipe.prompt_adapter is not None, **({"report": report} if report else {})}
    if demographics is not None:
        extra["demographics"] = demographics.as_dict()
    condition = Condition(anatomy, pathology, prompt, mask_record(args.anatomy, anatomy),
                          mask_record(args.pathology, pathology), extra)  # fmt: skip
    created = datetime.now(timezone.utc)
    return GenerationService(pipe, bundle_record(pipe, args.bundle), settings, device, created), condition


def _generate(args: argparse.Namespace, service, condition) -> dict:
    from tqdm.auto import tqdm

    from monai_xreal.synthesis.resume import OutputFolder
    from monai_xreal.synthesis.service import Sample, batched
    from monai_xreal.synthesis.writer import SyntheticImageWriter

    writer = SyntheticImageWriter(args.format or "png")
    folder = OutputFolder(args.output_dir, writer.ext)
    identities = folder.dicom_identities(service.created, args.patient_name, args.patient_id)
    samples = (Sample(args.seed + i, f"{args.prefix}_seed{args.seed + i}", args.output_dir,
                      identity=identities(i) if writer.fmt == "dcm" else None)
               for i in range(args.num_images))  # fmt: skip
    listed, shown, counts = [], [], {"written": 0, "skipped": 0}

    def done(sample) -> bool:
        finished = folder.finished(sample.stem, service, condition, sample.seed)
        counts["skipped"] += finished
        bar.update(finished)
        return finished

    with tqdm(total=args.num_images, unit="image", desc="generating") as bar:
        try:
            for generated in service.generate(condition, batched(samples, args.batch_size), done):
                written = service.write(generated, writer)
                counts["written"] += 1
                bar.update(1)
                if len(listed) < _LISTED:
                    listed += [written.path, written.sidecar]
                if args.grid is not None and len(shown) < _GRID_IMAGES:
                    shown.append(generated.image.cpu())
        except KeyboardInterrupt:
            print(f"monai-xreal generate: stopped after {counts['written']} new image(s); the finished ones are in "
                  f"{args.output_dir}: run the same command again to continue", file=sys.stderr)  # fmt: skip
            raise
    skipped = f" ({counts['skipped']} already there)" if counts["skipped"] else ""
    print(f"wrote {counts['written']} image(s) and their provenance sidecars to {args.output_dir}{skipped}:")
    for path in sorted(listed):
        print(f"  {path}")
    if counts["written"] * 2 > len(listed):
        print(f"  ... and {counts['written'] * 2 - len(listed)} more files")
    if args.grid is not None and shown:
        _write_grid(args.grid, shown, condition.anatomy, condition.pathology)
        print(f"grid: {args.grid}")
    return {**counts, "output_dir": args.output_dir}


def _write_grid(path: Path, images: list, anatomy, pathology) -> Path:
    """Each image beside itself with the requested masks (resized, nearest, to its grid) tinted and outlined."""
    import torch.nn.functional as F

    from monai_xreal.visualize import condition_grid, save_rgb

    size = images[0].shape[1:]

    def on_grid(mask):
        return None if mask is None else F.interpolate(mask[None].float(), size=size, mode="nearest-exact")[0].numpy()

    masks = (on_grid(anatomy), on_grid(pathology))
    return save_rgb(condition_grid([(image.numpy(), *masks) for image in images], columns=2), path)


def report_overrides(bundle: Path | None, report: dict | None) -> dict | None:
    """A report prompt goes through the bundle's report adapter when it ships one (``models/model_report_adapter``):
    that adapter maps report text to what the UNet was trained to read."""
    from monai_xreal.bundle import default_bundle_path, weight_file

    if report is None:
        return None
    try:
        weight_file(bundle if bundle is not None else default_bundle_path(), "prompt_adapter")
    except XRealInputError:
        return None
    return {"report_adapter": True}


def replay(args: argparse.Namespace) -> dict:
    """``--from-provenance``: the recorded batch sampled again; the image is compared with the record."""
    from monai_xreal.io.dicom import DicomIdentity, dicom_uid
    from monai_xreal.synthesis.provenance import read_provenance, reproduce
    from monai_xreal.synthesis.service import Sample
    from monai_xreal.synthesis.writer import SyntheticImageWriter, remove_partials, sidecar_path

    record = read_provenance(args.from_provenance)
    generated, service = reproduce(record, args.bundle, args.device, args.from_provenance.parent, args.from_provenance)
    output = record.get("output", {})
    stem = sidecar_path(output.get("file", f"{args.prefix}_seed{record['sampling']['seed']}")).stem
    identity = DicomIdentity(dicom_uid(), dicom_uid(), dicom_uid(), datetime.now(timezone.utc), args.patient_name,
                             args.patient_id)  # fmt: skip
    sample = Sample(generated.sample.seed, stem, args.output_dir, identity=identity)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(args.output_dir)
    written = service.write(type(generated)(generated.image, generated.record, sample),
                            SyntheticImageWriter(args.format or output.get("format") or "png"))  # fmt: skip
    digest = generated.record["image_sha256"]
    if record.get("image_sha256") == digest:
        print(f"reproduced {written.path} bit for bit (image SHA-256 {digest[:16]}… matches the record)")
    else:
        print(f"monai-xreal generate: warning: {written.path} differs from the recorded image (another device or "
              "software version?)", file=sys.stderr)  # fmt: skip
    return {"written": 1, "skipped": 0, "output_dir": args.output_dir}
