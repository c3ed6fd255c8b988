# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Splitting free-text radiology reports (MIMIC-CXR style) into their headed sections: the text the prompt
transforms and the report adapters condition on."""

from __future__ import annotations

import re

__all__ = ["REPORT_SECTIONS", "report_sections"]

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
