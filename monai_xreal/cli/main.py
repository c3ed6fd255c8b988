# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``monai-xreal``: the command line. Each subcommand lives in its own module; errors are reported here, in one line."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence

from monai_xreal.errors import XRealInputError, XRealInputWarning

__all__ = ["build_parser", "main", "warn_in_one_line"]


class _OneLineParser(argparse.ArgumentParser):
    """argparse with usage errors as one line (and exit code 2), like every other error of this CLI."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# command -> module of monai_xreal.cli (each has HELP and add_parser), in the order --help lists them
COMMANDS = {
    "generate": "generate",
    "generate-dataset": "generate_dataset",
    "phantoms": "phantoms",
    "simulate": "simulate",
    "anatomy": "anatomy",
    "judge": "judge",
    "adherence": "adherence",
    "evaluate": "evaluate",
    "memorisation": "memorisation",
    "utility": "utility",
    "benchmark": "benchmark",
    "convert": "convert",
    "finetune": "finetune",
    "edit": "edit",
    "serve": "serve",
    "reader-study": "reader_study",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser: every command in full (``command=None``), or only ``command`` in full and the others by
    name and help line (``""``: none in full), so that ``--help`` imports what its options need and no more."""
    from monai_xreal.version import __version__

    parser = _OneLineParser(prog="monai-xreal", description="Controllable chest X-ray generation (XReal) on MONAI.")
    parser.add_argument("--version", action="version", version=f"monai-xreal {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    commands.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"monai_xreal.cli.{module_name}")
        if command is None or name == command:
            module.add_parser(commands)
        else:
            commands.add_parser(name, help=module.HELP)
    return parser


def _quiet_optional_codec_notices() -> None:
    # MONAI announces on every DICOM-capable load that the optional GPU codec nvImageCodec is absent; it is noise here
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


@contextlib.contextmanager
def warn_in_one_line(command: str) -> Iterator[None]:
    """Input warnings raised in the block (``XRealInputWarning``: an all-background map, a prompt naming no finding,
    a non-square map) printed once each, as one line on stderr, like the errors; other warnings as Python prints
    them."""
    with warnings.catch_warnings():
        show = warnings.showwarning
        warnings.filterwarnings("once", category=XRealInputWarning)

        def one_line(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, XRealInputWarning):
                print(f"monai-xreal {command}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line
        yield


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: work in progress stops, finished files stay."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 success, 2 bad input, 130 interrupted, 143 terminated)."""
    _quiet_optional_codec_notices()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with warn_in_one_line(args.command):
            args.run(args)
    except XRealInputError as err:
        print(f"monai-xreal {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, _Terminated)
        print(f"monai-xreal {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
