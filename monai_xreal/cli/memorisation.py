# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal memorisation``: which generated images copy a training image (exactly, shifted, re-exposed or
noised): their nearest training images, a copy score, the flagged ones, and figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from monai_xreal.cli.options import check_output_file, make_parent, positive_int, torch_device
from monai_xreal.errors import XRealInputError

HELP = "find generated images that copy training images: nearest training images, copy scores, flagged pairs"


def add_parser(commands) -> None:
    p = commands.add_parser(
        "memorisation", help=HELP,
        description=HELP + ". Each set is a MONAI datalist (items with 'image'; the phantom and simulated sets' "
        "datalists too). The copy score is 1 for an identical image and 0 for one as close to the training set as "
        "training images are to each other; see docs/memorisation.md.",
    )  # fmt: skip
    p.add_argument("--generated", type=Path, required=True, help="datalist of the generated images")
    p.add_argument("--training", type=Path, required=True, help="datalist of the training images")
    p.add_argument("--output", type=Path, required=True, help="report JSON to write (figures beside it)")
    p.add_argument("--generated-key", default="training", help="the generated datalist's list (default: training)")
    p.add_argument("--training-key", default="training", help="the training datalist's list (default: training)")
    p.add_argument("--threshold", type=float, default=None, help="copy score from which an image is flagged "
                   "(default: 0.6)")  # fmt: skip
    p.add_argument("--neighbours", type=positive_int, default=3, help="nearest training images listed (default: 3)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images read at once (default: 32)")
    p.add_argument("--max-pairs", type=positive_int, default=24, help="flagged pairs in the figure (default: 24)")
    p.add_argument("--no-figures", action="store_true", help="write the report only, not <output>_pairs.png and "
                   "<output>_summary.png")  # fmt: skip
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: cpu)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict:
    from monai_xreal.memorisation import DEFAULT_THRESHOLD, find_copies

    check_output_file(args.output, "--output", ".json")
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if not -1.0 <= threshold <= 1.0:
        raise XRealInputError("--threshold", f"must be between -1 and 1, got {threshold}")
    report = find_copies(
        args.generated, args.training, threshold=threshold, neighbours=args.neighbours,
        generated_key=args.generated_key, training_key=args.training_key, batch_size=args.batch_size,
        device=args.device or "cpu", progress=True,
    )  # fmt: skip
    written = report.save(make_parent(args.output), figures=not args.no_figures, max_pairs=args.max_pairs)
    summary = report.summary()
    print(json.dumps(summary, indent=2))
    print(f"{summary['flagged']} of {summary['generated_images']} generated images flagged as copies; wrote "
          + ", ".join(map(str, written)))  # fmt: skip
    return summary
