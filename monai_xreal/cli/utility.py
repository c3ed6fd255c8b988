# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal utility``: does synthetic data help a classifier? The classifier bundle trained under the field's
protocols, tested on held-out real images, per-label and mean AUC with bootstrap CIs, as JSON and a figure."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from monai_xreal.cli.options import check_output_file, make_parent, positive_int, torch_device
from monai_xreal.errors import XRealInputError

HELP = "synthetic-data utility: train the classifier bundle on real / mixed / synthetic / fine-tuned sets, AUC with CIs"

_PROTOCOLS = ("real", "mixed", "synthetic", "finetune")  # monai_xreal.utility.PROTOCOL_KINDS, kept light for --help


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def _ratios(text: str) -> list[float]:
    try:
        ratios = [float(value) for value in _names(text)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err
    if any(not (r > 0 and r != float("inf")) for r in ratios):
        raise argparse.ArgumentTypeError(f"ratios must be positive numbers, got {text!r}")
    return ratios


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected ID=VALUE (a bundle config id), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from err
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def add_parser(commands) -> None:
    p = commands.add_parser(
        "utility", help=HELP,
        description=HELP + ". Each protocol is trained with each seed through the classifier bundle's train.json + "
        "utility.json (MONAI's bundle workflow; under torchrun with multi_gpu_train.json); finished runs in "
        "--work-dir are skipped when run again. 'Real' is whatever set you name.",
    )  # fmt: skip
    p.add_argument("--real", type=Path, required=True, help="datalist of the real training images (image, labels)")
    p.add_argument("--synthetic", type=Path, required=True, help="datalist of the synthetic training images")
    p.add_argument("--test", type=Path, required=True, help="datalist of the held-out real test images")
    p.add_argument("--output", type=Path, required=True, help="report JSON to write")
    p.add_argument("--figure", type=Path, default=None, help="PNG figure (default: the report's path with .png)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="the runs' checkpoints and results (default: <output stem>_runs beside the report)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs per run (default: the bundle's)")
    p.add_argument("--seeds", type=positive_int, default=3, help="runs per protocol, seeds 0..K-1 (default: 3)")
    p.add_argument("--protocols", type=_names, default=list(_PROTOCOLS),
                   help=f"comma-separated, of {','.join(_PROTOCOLS)} (default: all)")  # fmt: skip
    p.add_argument("--ratios", type=_ratios, default=[0.5, 1.0, 2.0],
                   help="synthetic images per real image, one mixed protocol each (default: 0.5,1,2)")  # fmt: skip
    p.add_argument("--labels", type=_names, default=None,
                   help="comma-separated findings to study (default: all; every set must have the same)")  # fmt: skip
    p.add_argument(
        "--labels-from-prompt",
        action="store_true",
        help="read synthetic items' labels from their prompt when they have none (generate-dataset sets)",
    )
    p.add_argument("--real-key", default="training", help="the real datalist's list (default: training)")
    p.add_argument("--synthetic-key", default="training", help="the synthetic datalist's list (default: training)")
    p.add_argument("--test-key", default=None,
                   help="the test datalist's list (default: test, else validation, else training)")  # fmt: skip
    p.add_argument("--bundle", type=Path, default=None, help="classifier bundle (default: the embedded cxr_classifier)")
    p.add_argument("--override", type=_override, action="append", default=[], metavar="ID=VALUE",
                   help="a bundle config id for every run, VALUE as JSON (e.g. batch_size=8); repeatable")  # fmt: skip
    p.add_argument("--finetune-lr", type=float, default=None, help="fine-tuning learning rate (default: the bundle's)")
    p.add_argument("--device", type=torch_device, default=None, help="torch device (default: the bundle's)")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap replicates (default: 1000)")
    p.add_argument("--confidence", type=_probability, default=0.95, help="CI coverage (default: 0.95)")
    p.add_argument("--verbose", action="store_true", help="the bundle's training logs instead of a progress bar")
    p.set_defaults(run=run)


def run(args) -> None:
    from monai_xreal.utility import run_utility_study

    check_output_file(args.output, "--output", ".json")
    figure = check_output_file(args.figure if args.figure is not None else args.output.with_suffix(".png"),
                               "--figure", ".png")  # fmt: skip
    if args.work_dir is not None and args.work_dir.exists() and not args.work_dir.is_dir():
        raise XRealInputError("--work-dir", f"{args.work_dir} is a file")
    report = run_utility_study(
        args.real, args.synthetic, args.test, make_parent(args.output), figure=make_parent(figure),
        work_dir=args.work_dir, progress=not args.verbose, protocols=args.protocols, ratios=args.ratios,
        epochs=args.epochs, seeds=args.seeds, bundle=args.bundle, labels=args.labels,
        labels_from_prompt=args.labels_from_prompt, real_key=args.real_key, synthetic_key=args.synthetic_key,
        test_key=args.test_key, overrides=dict(args.override), finetune_learning_rate=args.finetune_lr,
        device=None if args.device is None else str(args.device), bootstrap_samples=args.bootstrap,
        confidence=args.confidence, verbose=args.verbose,
    )  # fmt: skip
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    summary = {name: {k: p["mean_auc"][k] for k in ("mean", "low", "high")} for name, p in report["protocols"].items()}
    print(json.dumps({"mean_auc": summary}, indent=2))
    print(f"wrote {args.output}, {figure}")
