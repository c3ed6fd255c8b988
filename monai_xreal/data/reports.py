# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Splitting free-text radiology reports (MIMIC-CXR style) into their headed sections."""

from __future__ import annotations

import re
from pathlib import Path

from monai_xreal.errors import XRealInputError

__all__ = ["REPORT_SECTIONS", "read_report_prompt", "report_sections"]

REPORT_SECTIONS = ("findings", "impression")

# headings that count even alone on a line (no colon) or after a sentence on the same line
_KNOWN = (
    "FINAL REPORT", "WET READ", "EXAMINATION", "EXAM", "REASON FOR EXAMINATION", "REASON FOR EXAM", "INDICATION",
    "INDICATIONS", "CLINICAL HISTORY", "CLINICAL INFORMATION", "HISTORY", "TECHNIQUE", "COMPARISON", "COMPARISONS",
    "FINDINGS", "FINDING", "IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS", "RECOMMENDATION(S)",
    "RECOMMENDATIONS", "RECOMMENDATION", "NOTIFICATION",
)  # fmt: skip
# older MIMIC reports say CONCLUSION where newer ones say IMPRESSION; both are the radiologist's summary
_ALIASES = {
    "impressions": "impression", "conclusion": "impression", "conclusions": "impression", "finding": "findings",
    "comparisons": "comparison", "indications": "indication",
}  # fmt: skip
_KNOWN_PATTERN = "|".join(re.escape(name) for name in sorted(_KNOWN, key=len, reverse=True))
# case-sensitive on purpose: MIMIC headings are upper case, so "no findings: ..." inside a sentence is not one
_HEADING = re.compile(
    rf"^[ \t]*(?P<line>[A-Z][A-Z0-9 /&()\-]{{0,38}}[A-Z)])[ \t]*:"  # any upper-case heading opening a line
    rf"|(?<=[.\s])(?P<inline>{_KNOWN_PATTERN})[ \t]*:"  # "COMPARISON: None. FINDINGS: ..."
    rf"|^[ \t]*(?P<alone>{_KNOWN_PATTERN})[ \t]*$",  # "FINAL REPORT" or "IMPRESSION" on a line of its own
    re.MULTILINE,
)


def _name(heading: str) -> str:
    name = " ".join(heading.lower().split())
    return _ALIASES.get(name, name)


def report_sections(text: str) -> dict[str, str]:
    """Split a report into ``{section name: text}``, names in lower case, text with its whitespace collapsed.

    A heading is an upper-case phrase opening a line and ending in a colon (``FINDINGS:``, ``PA AND LATERAL
    CHEST:``), a known heading after a sentence on the same line, or a known heading alone on its line
    (``FINAL REPORT``). IMPRESSIONS and CONCLUSION(S) are filed as ``impression``, FINDING as ``findings``; a
    heading met twice has its texts joined. Text before the first heading is kept as ``preamble`` when not empty.

    The result always has ``findings`` and ``impression`` (empty strings when the report has none).
    """
    sections: dict[str, str] = dict.fromkeys(REPORT_SECTIONS, "")
    name, start = "preamble", 0
    for match in _HEADING.finditer(text):
        _add(sections, name, text[start : match.start()])
        name, start = _name(match.group("line") or match.group("inline") or match.group("alone")), match.end()
    _add(sections, name, text[start:])
    return sections


def _add(sections: dict[str, str], name: str, text: str) -> None:
    text = " ".join(text.split())
    if name in REPORT_SECTIONS or text:
        sections[name] = f"{sections[name]} {text}".strip() if sections.get(name) else text


def read_report_prompt(path: str | Path, sections: tuple[str, ...] = REPORT_SECTIONS) -> str:
    """The prompt of a report file: its FINDINGS then IMPRESSION (Diff-CXR's conditioning), whitespace collapsed.

    ``path`` is an IU X-ray / OpenI XML report, a MIMIC-CXR-style ``.txt`` with headings, or plain text (a
    report without any of ``sections`` is used whole, without the headings it has).

    Raises:
        XRealInputError: a missing, unreadable or empty file, or malformed XML (one line, naming ``report``).
    """
    from monai_xreal.data.iu_xray import iu_xray_report

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
