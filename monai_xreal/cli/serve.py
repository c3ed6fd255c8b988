# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal serve``: MONAI Label's ``start_server`` with this project's app and offline-safe options."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import socket
import sys
from pathlib import Path

from monai_xreal.errors import XRealInputError

HELP = "start a MONAI Label server with the xreal_generate and cxr_anatomy infer tasks"
# MONAI Label's datastore lists these files; DICOM CXRs are added to its default set
DATASTORE_FILE_EXT = '["*.nii.gz", "*.nii", "*.nrrd", "*.png", "*.jpg", "*.dcm"]'


def add_parser(commands) -> None:
    p = commands.add_parser("serve", help=HELP, description=HELP + ". Runs `monailabel start_server` in place of "
                            "this process; extra MONAI Label options go after `--`.")  # fmt: skip
    p.add_argument("--studies", required=True, help="datastore: a folder of images and labels (created), or a "
                   "DICOMweb URL such as http://127.0.0.1:8042/dicom-web (Orthanc, for OHIF)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    p.add_argument("--bundles", type=Path, default=None, help="folder holding the bundles (default: the embedded)")
    p.add_argument("--models", default="all", help="'all' (default) or a comma-separated subset of "
                   "xreal_generate,xreal_edit,cxr_anatomy")  # fmt: skip
    p.add_argument(
        "--device", default=None, help="torch device for every request (default: the request's, else cuda if available)"
    )
    p.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="app option, e.g. --conf max_upload_mb 16 (see docs/label.md)")  # fmt: skip
    p.add_argument("--app-dir", type=Path, default=None,
                   help="folder MONAI Label runs the app from and writes its logs/ and model/ into "
                   "(default: the installed app when writable, else ~/.cache/monai_xreal)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.add_argument("monailabel_args", nargs=argparse.REMAINDER, help="after --: passed to monailabel start_server")
    p.set_defaults(run=run)


def server_command(args: argparse.Namespace) -> list[str]:
    """The ``python -m monailabel.main start_server ...`` command line (what the ``monailabel`` launcher runs)."""
    from monai_xreal.label import writable_app_dir

    # zoo_source / sam2: MONAI Label's own code must not reach the model zoo or download SAM2
    conf = {"models": args.models, "zoo_source": "github", "sam2": "false"}
    if args.bundles is not None:
        conf["bundles"] = str(args.bundles.resolve())
    if args.device:
        conf["device"] = args.device
    conf.update(dict(args.conf))
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(writable_app_dir(args.app_dir)),
               "--studies", _studies(args.studies), "--host", args.host, "--port", str(args.port),
               "--uvicorn_app", "monai_xreal.label.asgi:app"]  # fmt: skip
    for key, value in conf.items():
        command += ["--conf", key, value]
    extra = args.monailabel_args[1:] if args.monailabel_args[:1] == ["--"] else args.monailabel_args
    return command + list(extra)


def run(args: argparse.Namespace) -> None:
    if importlib.util.find_spec("monailabel") is None:
        raise XRealInputError(
            "serve", 'MONAI Label is not installed: pip install "monai-xreal[label]" torch==2.13.0 (see the README)'
        )
    _check(args)
    command = server_command(args)
    if args.dry_run:
        print(shlex.join(command))
        return
    env = dict(os.environ)
    env.setdefault("MONAI_LABEL_DATASTORE_FILE_EXT", DATASTORE_FILE_EXT)
    print(f"starting MONAI Label on http://{args.host}:{args.port} (studies: {args.studies}); Ctrl+C stops it",
          flush=True)  # fmt: skip
    os.execve(sys.executable, command, env)


def _check(args: argparse.Namespace) -> None:
    """Refuse, in one line, what would make the server fail after start."""
    from monai_xreal.label.bundles import resolve_bundle, resolve_models
    from monai_xreal.label.params import GenerateLimits

    if not _is_url(args.studies) and Path(args.studies).exists() and not Path(args.studies).is_dir():
        raise XRealInputError("studies", f"{args.studies} is not a folder")
    if args.app_dir is not None and args.app_dir.exists() and not args.app_dir.is_dir():
        raise XRealInputError("app-dir", f"{args.app_dir} is not a folder")
    if not 0 < args.port < 65536:
        raise XRealInputError("port", f"{args.port} is not a TCP port")
    conf = dict(args.conf)
    if args.bundles is not None:
        conf["bundles"] = str(args.bundles)
    for model in resolve_models(args.models):
        resolve_bundle(model, conf)
    GenerateLimits.from_conf(conf)
    if not args.dry_run:
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            try:
                probe.bind((args.host, args.port))
            except OSError as err:
                raise XRealInputError("port", f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None


def _is_url(studies: str) -> bool:
    return studies.startswith(("http://", "https://"))


def _studies(studies: str) -> str:
    """MONAI Label's ``--studies``: a DICOMweb URL as given, a folder as an absolute path."""
    return studies if _is_url(studies) else str(Path(studies).resolve())
