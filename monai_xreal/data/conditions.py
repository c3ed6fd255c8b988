# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Conditions datalists: ``{"conditions": [{"id", "anatomy", "pathology", "prompt", "seed"}, ...]}``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from monai_xreal.errors import XRealInputError
from monai_xreal.text.demographics import Demographics

__all__ = ["CONDITION_KEYS", "load_conditions", "read_json"]

CONDITION_KEYS = ("id", "anatomy", "pathology", "prompt", "seed", "demographics")
# ids name output files and folders: letters, digits, "_", "-", "." (not first), at most 128 characters
_ID = re.compile(r"\w[\w.-]{0,127}")


def read_json(path: str | Path, argument: str):
    """The content of a JSON file; a missing or invalid file is an :class:`XRealInputError` naming ``argument``."""
    path = Path(path)
    if not path.is_file():
        raise XRealInputError(argument, f"no such file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise XRealInputError(argument, f"{path} is not valid JSON: {err}") from err


def load_conditions(path: str | Path, base_seed: int = 0, root: str | Path | None = None) -> list[dict]:
    """Read a conditions datalist into MONAI data dicts.

    Relative ``anatomy`` / ``pathology`` paths are resolved against the datalist's folder; a mask that resolves
    (symbolic links followed) outside ``root`` is refused, so a datalist cannot point the reader at arbitrary
    files. Entries without a ``seed`` get ``base_seed + index``; a missing ``prompt`` is the empty prompt.

    Args:
        path: the JSON file.
        base_seed: seed of the first entry without its own.
        root: the folder every mask must be in (default: the datalist's folder).

    Returns:
        one dict per condition with ``id``, ``prompt``, ``seed`` and, when given, ``anatomy`` and ``pathology``
        as absolute paths and ``demographics`` (checked, :class:`~monai_xreal.text.demographics.Demographics`).

    Raises:
        XRealInputError: unreadable file, wrong structure, duplicate or unsafe ids, a mask outside ``root`` or a
            missing mask file.
    """
    path = Path(path)
    root = (Path(root) if root is not None else path.parent).resolve()
    content = read_json(path, "conditions")
    entries = content.get("conditions") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise XRealInputError("conditions", f'{path} needs a non-empty list under "conditions"')
    conditions, seen = [], set()
    for index, entry in enumerate(entries):
        where = f"conditions[{index}]"
        if not isinstance(entry, dict):
            raise XRealInputError(where, "each condition must be an object")
        unknown = sorted(set(entry) - set(CONDITION_KEYS))
        if unknown:
            raise XRealInputError(where, f"unknown field(s) {unknown}; allowed: {list(CONDITION_KEYS)}")
        prompt = entry.get("prompt", "")
        if not isinstance(prompt, str):
            raise XRealInputError(f"{where}.prompt", f"must be text, got {type(prompt).__name__}")
        item = {
            "id": _condition_id(entry.get("id", f"condition_{index:05d}"), f"{where}.id"),
            "prompt": prompt,
            "seed": _seed(entry.get("seed", base_seed + index), f"{where}.seed"),
        }
        if item["id"] in seen:
            raise XRealInputError(f"{where}.id", f"{item['id']!r} is duplicated")
        seen.add(item["id"])
        demographics = Demographics.from_mapping(entry.get("demographics"), f"{where}.demographics")
        if demographics is not None:
            item["demographics"] = demographics.as_dict()
        for key in ("anatomy", "pathology"):
            if entry.get(key) is None:
                continue
            if not isinstance(entry[key], str) or not entry[key] or "\0" in entry[key]:
                raise XRealInputError(f"{where}.{key}", f"must be a file path, got {entry[key]!r:.80}")
            file = Path(entry[key])
            file = (file if file.is_absolute() else path.parent / file).resolve()
            if not file.is_relative_to(root):
                raise XRealInputError(f"{where}.{key}", f"{file} is outside the dataset root {root}")
            if not file.is_file():
                raise XRealInputError(f"{where}.{key}", f"no such file: {file}")
            item[key] = str(file)
        conditions.append(item)
    return conditions


def _condition_id(value, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _ID.fullmatch(str(value)):
        raise XRealInputError(where, f"{str(value)[:80]!r} is not a valid id (letters, digits, '_', '-', '.')")
    return str(value)


def _seed(value, where: str) -> int:
    # torch generators and numpy seed sequences both need a non-negative integer
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise XRealInputError(where, f"a seed must be a non-negative integer, got {value!r}")
    return value
