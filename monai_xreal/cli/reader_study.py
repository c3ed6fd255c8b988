# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal reader-study``: serve a blinded real / fake / unsure study, or write its report."""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import sys
from pathlib import Path

from monai_xreal.errors import XRealInputError

HELP = "run a blinded reader study of real and synthetic CXRs (real / fake / unsure), or report its results"


def add_parser(commands) -> None:
    p = commands.add_parser("reader-study", help=HELP, description=HELP + ". Answers are stored in --db as they are "
                            "given; run the same command again to continue the study. Each reader answers through "
                            "their own secret link, the report needs the owner's; the links are printed when the "
                            "study is created (and by --show-links). The server speaks plain HTTP: serve other "
                            "machines through a TLS reverse proxy (docs/reader_study.md).")  # fmt: skip
    p.add_argument("--real", type=Path, help="MONAI datalist of real images (its 'image' entries)")
    p.add_argument("--synthetic", type=Path, help="MONAI datalist of synthetic images (e.g. generate-dataset's)")
    p.add_argument("--readers", type=int, default=1, help="number of readers (default: 1)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only; "
                   "anything else gets a warning: put a TLS reverse proxy in front instead)")  # fmt: skip
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    p.add_argument("--public-url", default=None, metavar="URL", help="the address readers open, e.g. "
                   "https://reader.example.org behind a reverse proxy (default: http://HOST:PORT), for the links")  # fmt: skip
    p.add_argument("--db", type=Path, default=Path("reader_study.sqlite"), help="the study's SQLite file (its frozen "
                   "definition DB-stem.study.json and secret links DB-stem.secrets.json lie beside it)")  # fmt: skip
    p.add_argument("--show-links", action="store_true", help="print the readers' and the owner's links of the "
                   "study in --db and exit")  # fmt: skip
    p.add_argument("--max-per-class", type=int, default=None, help="draw at most this many real and as many "
                   "synthetic images (default: all)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the draw and of each reader's order (default: 0)")
    p.add_argument("--report", type=Path, default=None, metavar="DIR", help="write DIR/reader_study.json, "
                   "DIR/reader_study.png and DIR/answers.csv from --db and exit")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from monai_xreal.reader_study import ReaderStudyServer, StudyStore

    if args.report is not None:
        return write_report(args.db, args.report)
    if args.show_links:
        return show_links(args.db, public_url(args))
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
    try:
        issued = store.setup(real, fake, args.readers, args.seed)
        try:
            server = ReaderStudyServer(store, (args.host, args.port))
        except OSError as err:
            raise XRealInputError("port", f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    except BaseException:
        store.close()
        raise
    if not is_loopback(args.host):
        print(f"monai-xreal reader-study: warning: serving plain HTTP on {args.host}: reader links and answers cross "
              "the network in clear; keep --host 127.0.0.1 behind a TLS reverse proxy (docs/reader_study.md)",
              file=sys.stderr, flush=True)  # fmt: skip
    print(f"reader study {store.study_id} ({len(real)} real and {len(fake)} synthetic images, {args.readers} "
          f"reader(s)) on {public_url(args)}; answers in {args.db}; Ctrl+C stops", flush=True)  # fmt: skip
    if issued:
        print_links(store, public_url(args))
    else:
        print(f"links: monai-xreal reader-study --db {args.db} --show-links", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        store.close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def public_url(args: argparse.Namespace) -> str:
    """The base of the links: ``--public-url``, else ``http://HOST:PORT`` (this machine's name for a wildcard host)."""
    if args.public_url:
        return args.public_url.rstrip("/")
    host = socket.gethostname() if args.host in ("", "0.0.0.0", "::") else args.host
    return f"http://[{host}]:{args.port}" if ":" in host else f"http://{host}:{args.port}"


def print_links(store, base_url: str) -> None:
    """Each reader's link and the owner's, one a line (they are secrets: hand each to its reader only)."""
    from monai_xreal.reader_study import study_links

    links = study_links(store, base_url)
    for reader, link in links["readers"].items():
        print(f"  reader {reader}: {link}")
    print(f"  owner's report: {links['report']}")
    print(f"  owner's answers (CSV): {links['answers']}", flush=True)


def show_links(db: Path, base_url: str) -> None:
    from monai_xreal.reader_study import StudyStore

    if not db.is_file():
        raise XRealInputError("db", f"no such study file: {db}")
    store = StudyStore(db)
    try:
        print(f"reader study {store.study_id} ({db})")
        print_links(store, base_url)
    finally:
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
    from monai_xreal.io.atomic import write_text_atomically
    from monai_xreal.reader_study import StudyStore, answers_csv, reader_report, report_figure
    from monai_xreal.visualize import save_rgb

    if not db.is_file():
        raise XRealInputError("db", f"no such study file: {db}")
    store = StudyStore(db)
    try:
        answers = store.answers()
        report = reader_report(answers, store.readers, store.image_count, study=store.study_id)
        table = answers_csv(answers, store.study_id)
    finally:
        store.close()
    write_text_atomically(folder / "reader_study.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(folder / "answers.csv", table, mode=0o600)  # it holds every image's truth
    save_rgb(report_figure(report), folder / "reader_study.png")
    print(f"wrote {folder / 'reader_study.json'}, {folder / 'reader_study.png'} and {folder / 'answers.csv'} "
          f"(study {report['study']})")  # fmt: skip
