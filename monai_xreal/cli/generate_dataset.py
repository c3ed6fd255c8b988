# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal generate-dataset``: a synthetic dataset, sharded over ``torchrun`` processes and resumable."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from monai_xreal.cli.options import add_sampling_options, sampling_knobs
from monai_xreal.text.demographics import GROUPINGS

HELP = "generate a synthetic dataset: K images per condition, with a manifest and a MONAI datalist"


def _groupings(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or len(set(names)) != len(names) or any(n not in GROUPINGS for n in names):
        raise argparse.ArgumentTypeError(f"expected distinct groupings of {','.join(GROUPINGS)}, got {text!r}")
    return names


def add_parser(commands) -> None:
    p = commands.add_parser(
        "generate-dataset", help=HELP,
        description=HELP + ". Run it again on the same --output-dir to finish an interrupted run; share the work "
        "with `torchrun --nproc_per_node=N -m monai_xreal generate-dataset ...` (the result does not depend on N).",
    )  # fmt: skip
    p.add_argument("--conditions", type=Path, required=True, help="conditions datalist (JSON, see docs/data.md)")
    p.add_argument("--samples-per-condition", type=int, required=True, help="images per condition (K)")
    p.add_argument("--output-dir", type=Path, required=True, help="the dataset folder (created, or continued)")
    p.add_argument("--seed", type=int, default=0, help="run seed; sample seeds derive from it, the condition id "
                   "and seed, and the sample index (default: 0)")  # fmt: skip
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder every mask must be in (default: the datalist's folder)")  # fmt: skip
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads per process on CPU (default: 1); "
                   "part of the result, so a dataset keeps it across restarts")  # fmt: skip
    p.add_argument(
        "--exclude-copies-of",
        type=Path,
        default=None,
        metavar="DATALIST",
        help="training datalist: a sample that copies one of its images is made again with the next seed "
        "(3 times at most, then dropped); the manifest records each such try (see docs/memorisation.md)",
    )
    p.add_argument("--copy-threshold", type=float, default=None,
                   help="copy score from which a sample counts as a copy (default: 0.6)")  # fmt: skip
    p.add_argument("--balance-demographics", type=_groupings, default=(), metavar="GROUPINGS",
                   help=f"comma-separated, of {','.join(GROUPINGS)}: every condition made once per combination of "
                   "their groups, --samples-per-condition images each, for fairness studies (the bundle must be "
                   "trained with demographics in its prompts)")  # fmt: skip
    add_sampling_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict:
    import torch

    from monai_xreal.engines.distributed import launched_ranks
    from monai_xreal.errors import XRealInputError
    from monai_xreal.memorisation import DEFAULT_THRESHOLD
    from monai_xreal.synthesis.dataset import DatasetSpec, generate_dataset

    threshold = DEFAULT_THRESHOLD if args.copy_threshold is None else args.copy_threshold
    if args.copy_threshold is not None and args.exclude_copies_of is None:
        raise XRealInputError("copy-threshold", "applies with --exclude-copies-of only")
    if args.copy_threshold is not None and not 0 < args.copy_threshold <= 1:
        raise XRealInputError("copy-threshold", f"must be in (0, 1], got {args.copy_threshold}")
    spec = DatasetSpec(
        conditions=args.conditions, samples_per_condition=args.samples_per_condition, output_dir=args.output_dir,
        bundle=args.bundle, fmt=args.format or "png", batch_size=args.batch_size, seed=args.seed,
        knobs=sampling_knobs(args), scheduler=args.scheduler, patient_name=args.patient_name,
        patient_id=args.patient_id, data_root=args.data_root, cpu_threads=args.cpu_threads,
        exclude_copies_of=args.exclude_copies_of, copy_threshold=threshold,
        balance_demographics=args.balance_demographics,
    )  # fmt: skip
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device or torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    with launched_ranks(device) as (rank, world_size, barrier):
        summary = generate_dataset(spec, device, rank, world_size, barrier)
    if rank == 0:
        print(f"{args.output_dir}: {summary['images']} images ({summary['generated']} made by rank 0 now, "
              f"{summary['skipped']} found finished); manifest.jsonl and datalist.json written")  # fmt: skip
        if args.exclude_copies_of is not None:
            print(f"copies of {args.exclude_copies_of} images: {summary['regenerated']} sample(s) made again, "
                  f"{summary['dropped']} dropped by rank 0 now (see manifest.jsonl)")  # fmt: skip
    return summary
