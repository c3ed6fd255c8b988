# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal``: the command line. Each subcommand lives in its own module; errors are reported here, in one line."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from monai_xreal.errors import XRealInputError

__all__ = ["main", "build_parser"]


class _OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one line (and exit code 2), like every other error of this CLI."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from monai_xreal import __version__
    from monai_xreal.cli import (
        adherence,
        anatomy,
        benchmark,
        convert,
        evaluate,
        generate,
        generate_dataset,
        judge,
        phantoms,
        reader_study,
        serve,
        simulate,
    )

    parser = _OneLineParser(prog="monai-xreal", description="Controllable chest X-ray generation (XReal) on MONAI.")
    parser.add_argument("--version", action="version", version=f"monai-xreal {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    commands.required = True
    for module in (
        generate,
        generate_dataset,
        phantoms,
        simulate,
        anatomy,
        judge,
        adherence,
        evaluate,
        benchmark,
        convert,
        serve,
        reader_study,
    ):
        module.add_parser(commands)
    return parser


def _quiet_optional_codec_notices() -> None:
    # MONAI announces on every DICOM-capable load that the optional GPU codec nvImageCodec is absent; it is noise here
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 success, 2 bad input)."""
    _quiet_optional_codec_notices()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except XRealInputError as err:
        print(f"monai-xreal {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"monai-xreal {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
