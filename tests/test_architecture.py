# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The package's tiers: the import contracts in ``setup.cfg`` (``[importlinter:contract:*]``) hold.

The same check as ``lint-imports --config setup.cfg`` from the repository root; a broken contract fails with
import-linter's report (which module imports which, line by line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "setup.cfg"


def test_the_tiers_contracts_are_kept():
    # a fresh process: the linter puts the working directory on sys.path and reads the source tree there
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    done = subprocess.run(
        [sys.executable, "-c", command, "--config", str(CONFIG), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
