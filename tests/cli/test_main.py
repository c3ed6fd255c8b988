# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The command line as a whole: fast help for every command, one naming scheme for options."""

import subprocess
import sys
import time

import pytest

from monai_xreal.cli.main import COMMANDS, build_parser


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_fast_for_every_command(command):
    """``--help`` loads no network library: each command imports what its options need and no more."""
    argv = [sys.executable, "-m", "monai_xreal", *([command] if command else []), "--help"]
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and "usage: monai-xreal" in result.stdout, result.stderr
    assert elapsed < 1.5, f"{command} --help took {elapsed:.1f} s"


def test_options_are_named_alike_across_commands():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    options = {name: {o for a in sub._actions for o in a.option_strings} for name, sub in commands.items()}
    for retired in ("--num", "--steps", "--num-samples", "--fast-steps", "--fast-scheduler", "--fast-eta"):
        assert not [name for name, opts in options.items() if retired in opts], retired
    for name in ("generate", "generate-dataset", "adherence", "evaluate", "benchmark"):
        assert "--num-inference-steps" in options[name], name
    for name in ("generate", "edit", "phantoms", "simulate", "adherence", "evaluate", "judge", "benchmark"):
        assert "--num-images" in options[name], name
