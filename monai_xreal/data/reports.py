# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Reading a report file (IU X-ray XML, MIMIC-CXR-style text, plain text) as a prompt; the section splitting is
:mod:`monai_xreal.text.reports`' (re-exported here)."""

from __future__ import annotations

from pathlib import Path

from monai_xreal.data.iu_xray import iu_xray_report
from monai_xreal.errors import XRealInputError
from monai_xreal.text.reports import REPORT_SECTIONS, report_sections

__all__ = ["REPORT_SECTIONS", "read_report_prompt", "report_sections"]


def read_report_prompt(path: str | Path, sections: tuple[str, ...] = REPORT_SECTIONS) -> str:
    """The prompt of a report file: its FINDINGS then IMPRESSION (Diff-CXR's conditioning), whitespace collapsed.

    ``path`` is an IU X-ray / OpenI XML report, a MIMIC-CXR-style ``.txt`` with headings, or plain text (a
    report without any of ``sections`` is used whole, without the headings it has).

    Raises:
        XRealInputError: a missing, unreadable or empty file, or malformed XML (one line, naming ``report``).
    """
    path = Path(path)
    if not path.is_file():
        raise XRealInputError("report", f"no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise XRealInputError("report", f"{path} is not UTF-8 text: {err.reason}") from None
    if text.lstrip().startswith("<"):
        found = iu_xray_report(text, source=f"report:{path}")["report"]
    else:
        found = report_sections(text)
    prompt = " ".join(found[name] for name in sections if found.get(name))
    if not prompt:  # plain text, or a report whose other sections are all it has
        prompt = " ".join(value for value in found.values() if value)
    if not prompt.strip():
        raise XRealInputError("report", f"{path} holds no report text")
    return prompt
