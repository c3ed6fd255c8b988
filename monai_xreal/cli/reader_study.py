# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal reader-study``: serve a blinded real / fake / unsure study, or write its report."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from monai_xreal.errors import XRealInputError

HELP = "run a blinded reader study of real and synthetic CXRs (real / fake / unsure), or report its results"


def add_parser(commands) -> None:
    p = commands.add_parser("reader-study", help=HELP, description=HELP + ". Answers are stored in --db as they are "
                            "given; run the same command again to continue the study.")  # fmt: skip
    p.add_argument("--real", type=Path, help="MONAI datalist of real images (its 'image' entries)")
    p.add_argument("--synthetic", type=Path, help="MONAI datalist of synthetic images (e.g. generate-dataset's)")
    p.add_argument("--readers", type=int, default=1, help="number of readers (default: 1)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    p.add_argument("--db", type=Path, default=Path("reader_study.sqlite"), help="the study's SQLite file")
    p.add_argument("--max-per-class", type=int, default=None, help="draw at most this many real and as many "
                   "synthetic images (default: all)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the draw and of each reader's order (default: 0)")
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="write DIR/reader_study.json and DIR/reader_study.png from --db and exit")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from monai_xreal.reader_study import ReaderStudyServer, StudyStore

    if args.report is not None:
        return write_report(args.db, args.report)
    if args.real is None or args.synthetic is None:
        raise XRealInputError("real", "--real and --synthetic datalists are needed to serve a study")
    if not 0 < args.port < 65536:
        raise XRealInputError("port", f"{args.port} is not a TCP port")
    real, fake = image_paths(args.real, "real"), image_paths(args.synthetic, "synthetic")
    if args.max_per_class is not None:
        if args.max_per_class < 1:
            raise XRealInputError("max-per-class", f"must be a positive integer, got {args.max_per_class}")
        draw = random.Random(args.seed)
        real, fake = (sorted(draw.sample(p, min(len(p), args.max_per_class))) for p in (real, fake))
    store = StudyStore(args.db)
    store.setup(real, fake, args.readers, args.seed)
    try:
        server = ReaderStudyServer(store, (args.host, args.port))
    except OSError as err:
        raise XRealInputError("port", f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    host, port = server.server_address[:2]
    print(f"reader study of {len(real)} real and {len(fake)} synthetic images for {args.readers} reader(s): "
          f"open http://{host}:{port}/ (answers saved in {args.db}); Ctrl+C stops", flush=True)  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.server_close()
        store.close()


def image_paths(datalist: Path, argument: str) -> list[str]:
    """Every ``image`` of a MONAI datalist (its training / validation / test lists), resolved against its folder."""
    from monai.data import load_decathlon_datalist

    if not datalist.is_file():
        raise XRealInputError(argument, f"no such file: {datalist}")
    try:
        content = json.loads(datalist.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise XRealInputError(argument, f"{datalist} is not valid JSON: {err}") from None
    keys = [k for k in ("training", "validation", "test") if isinstance(content, dict) and k in content]
    if not keys:
        raise XRealInputError(argument, f'{datalist} has no "training", "validation" or "test" list')
    paths = []
    for key in keys:
        for item in load_decathlon_datalist(str(datalist), data_list_key=key):
            image = item.get("image") if isinstance(item, dict) else None
            if not isinstance(image, str) or not Path(image).is_file():
                raise XRealInputError(argument, f"{datalist} [{key}]: missing image file {image!r}")
            paths.append(str(Path(image).resolve()))
    return sorted(set(paths))


def write_report(db: Path, folder: Path) -> None:
    from monai_xreal.reader_study import StudyStore, reader_report, report_figure
    from monai_xreal.visualize import save_rgb

    if not db.is_file():
        raise XRealInputError("db", f"no such study file: {db}")
    store = StudyStore(db)
    try:
        report = reader_report(store.answers(), store.readers, len(store.order(1)))
    finally:
        store.close()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reader_study.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    save_rgb(report_figure(report), folder / "reader_study.png")
    print(f"wrote {folder / 'reader_study.json'} and {folder / 'reader_study.png'}")
