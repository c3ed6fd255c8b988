# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal generate``: CXRs from an anatomy mask, a pathology mask and a prompt, each with its provenance."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path


from monai_xreal.cli.options import add_sampling_options, sampling_knobs
from monai_xreal.errors import XRealInputError

HELP = "generate CXRs that follow an anatomy mask, a pathology mask and a prompt"


def add_parser(commands) -> None:
    p = commands.add_parser("generate", help=HELP, description=HELP + ". Each image gets a JSON sidecar saying "
                            "how it was made; --from-provenance makes it again.")  # fmt: skip
    p.add_argument("--anatomy", type=Path, help="anatomy label map (PNG, NIfTI or DICOM)")
    p.add_argument("--pathology", type=Path, help="pathology mask, 1 where the finding goes (PNG, NIfTI or DICOM)")
    p.add_argument("--prompt", default="", help="finding or report text, e.g. 'Cardiomegaly' (default: empty)")
    p.add_argument("--report", type=Path, default=None, help="a report file (IU X-ray XML, MIMIC-CXR .txt or plain "
                   "text) whose FINDINGS and IMPRESSION are the prompt; instead of --prompt")  # fmt: skip
    p.add_argument("--num-images", type=int, default=1, help="images to generate (seeds SEED, SEED+1, ...)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image (default: 0)")
    add_sampling_options(p)
    p.add_argument("--output-dir", type=Path, required=True, help="folder for the images and their sidecars")
    p.add_argument("--prefix", default="xreal", help="file name prefix (default: xreal)")
    p.add_argument("--grid", type=Path, default=None, metavar="FILE.png",
                   help="also write a PNG of the first 8 images, each beside its overlay of the requested "
                   "masks")  # fmt: skip
    p.add_argument("--from-provenance", type=Path, default=None, metavar="FILE",
                   help="make the image a sidecar describes again (same bundle weights and masks, checked by "
                   "SHA-256); --bundle and --device override the recorded ones")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> list[Path]:
    import torch
    from tqdm.auto import tqdm

    from monai_xreal.io import load_mask, staged_output
    from monai_xreal.io.dicom import DicomIdentity, dicom_uid
    from monai_xreal.io.hashing import sha256_array, sha256_file
    from monai_xreal.pipeline import XRealPipeline
    from monai_xreal.synthesis.provenance import bundle_record, make_provenance, mask_record
    from monai_xreal.synthesis.sampling import sample_batch
    from monai_xreal.synthesis.writer import SyntheticImageWriter

    if args.from_provenance is not None:
        return replay(args)
    knobs = sampling_knobs(args)
    report = None
    if args.report is not None:
        from monai_xreal.data.reports import read_report_prompt

        if args.prompt:
            raise XRealInputError("report", "give --report or --prompt, not both")
        args.prompt = read_report_prompt(args.report)
        report = {"file": str(args.report.resolve()), "sha256": sha256_file(args.report)}
    if args.num_images < 1:
        raise XRealInputError("num_images", f"must be a positive integer, got {args.num_images}")
    if args.seed < 0:
        raise XRealInputError("seed", f"must be a non-negative integer, got {args.seed}")
    if args.grid is not None and (args.grid.suffix.lower() != ".png" or not args.grid.parent.is_dir()):
        raise XRealInputError("grid", f"must be a .png path in an existing folder, got {args.grid}")
    anatomy = None if args.anatomy is None else load_mask(args.anatomy, "anatomy")
    pathology = None if args.pathology is None else load_mask(args.pathology, "pathology")
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = XRealPipeline.from_bundle(args.bundle, device=device, overrides=report_overrides(args.bundle, report))
    pipe.prepare_conditions(anatomy, pathology, args.prompt)  # every bad input fails here, before any work
    settings = pipe.sampling_settings(args.scheduler, **knobs)
    scheduler = settings.pop("scheduler")
    bundle = bundle_record(pipe, args.bundle)
    masks = {"anatomy": mask_record(args.anatomy, anatomy), "pathology": mask_record(args.pathology, pathology)}
    created = datetime.now(timezone.utc)
    study, series = dicom_uid(), dicom_uid()  # one study and series per run, fresh every run
    writer = SyntheticImageWriter(args.format or "png")

    batches = [range(i, min(i + args.batch_size, args.num_images)) for i in range(0, args.num_images, args.batch_size)]
    steps_per_batch = settings["num_inference_steps"] * (2 if pathology is not None else 1)
    shown = []  # the first images, for --grid
    with (
        staged_output(args.output_dir) as staging,
        tqdm(total=len(batches) * steps_per_batch, unit="step", desc="generating") as bar,
    ):
        for batch in batches:
            seeds = [args.seed + i for i in batch]
            images = sample_batch(pipe, anatomy, pathology, args.prompt, seeds, settings, scheduler,
                                  callback=lambda *_: bar.update(1))  # fmt: skip
            for index, (seed, image) in enumerate(zip(seeds, images, strict=True)):
                record = make_provenance(bundle, args.prompt, masks["anatomy"], masks["pathology"],
                                         {**settings, "scheduler": scheduler}, seeds, index, device, created,
                                         extra={"image_sha256": sha256_array(image),
                                                **({"report": report} if report else {}),
                                                "report_adapter": pipe.prompt_adapter is not None})  # fmt: skip
                identity = DicomIdentity(study, series, dicom_uid(), created, args.patient_name, args.patient_id,
                                         instance_number=seed - args.seed + 1)  # fmt: skip
                writer.write(image, staging, f"{args.prefix}_seed{seed}", record, identity)
                if args.grid is not None and len(shown) < 8:
                    shown.append(image.cpu())
        written = sorted(p.name for p in staging.iterdir())
    paths = [args.output_dir / name for name in written]
    print(f"wrote {len(paths) // 2} image(s) and their provenance sidecars to {args.output_dir}:")
    for path in paths:
        print(f"  {path}")
    if args.grid is not None:
        _write_grid(args.grid, shown, anatomy, pathology)
        print(f"grid: {args.grid}")
    return paths


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


def replay(args: argparse.Namespace) -> list[Path]:
    """``--from-provenance``: the recorded batch sampled again; the image is compared with the record."""
    from monai_xreal.io import staged_output
    from monai_xreal.io.dicom import DicomIdentity, dicom_uid
    from monai_xreal.io.hashing import sha256_array
    from monai_xreal.synthesis.provenance import make_provenance, read_provenance, reproduce
    from monai_xreal.synthesis.writer import SyntheticImageWriter, sidecar_path

    record = read_provenance(args.from_provenance)
    image, pipe = reproduce(record, args.bundle, args.device, base_dir=args.from_provenance.parent)
    sampling = record["sampling"]
    output = record.get("output", {})
    fmt = args.format or output.get("format") or "png"
    stem = sidecar_path(output.get("file", f"{args.prefix}_seed{sampling['seed']}")).stem
    digest = sha256_array(image)
    settings = {k: sampling.get(k) for k in (*pipe.sampling_defaults, "scheduler")}
    masks = {}
    for key in ("anatomy", "pathology"):  # relative mask paths (datasets') start from the original sidecar
        entry = record.get(key)
        if entry is not None and "file" in entry:
            entry = {**entry, "file": str((args.from_provenance.parent / entry["file"]).resolve())}
        masks[key] = entry
    extra = {"image_sha256": digest, "reproduces": str(args.from_provenance.resolve())}
    extra |= {key: record[key] for key in ("report", "dataset", "report_adapter") if key in record}
    again = make_provenance(record["bundle"], record.get("prompt", ""), masks["anatomy"], masks["pathology"],
                            settings, sampling["batch_seeds"], sampling["batch_index"], pipe.device,
                            extra=extra)  # fmt: skip
    now = datetime.now(timezone.utc)
    identity = DicomIdentity(dicom_uid(), dicom_uid(), dicom_uid(), now, args.patient_name, args.patient_id)
    with staged_output(args.output_dir) as staging:
        written = SyntheticImageWriter(fmt).write(image, staging, stem, again, identity)
    path = args.output_dir / written.path.name
    if record.get("image_sha256") == digest:
        print(f"reproduced {path} bit for bit (image SHA-256 {digest[:16]}… matches the record)")
    else:
        print(f"monai-xreal generate: warning: {path} differs from the recorded image (another device or software "
              "version?)", file=sys.stderr)  # fmt: skip
    return [path, args.output_dir / written.sidecar.name]
