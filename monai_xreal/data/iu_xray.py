# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""IU X-ray (OpenI, ``NLMCXR_reports.tgz``): one XML report per study, naming the study's images."""

from __future__ import annotations

import logging
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from monai_xreal.data.images import find_image
from monai_xreal.data.skips import RowSkips
from monai_xreal.errors import XRealInputError
from monai_xreal.text.reports import REPORT_SECTIONS

__all__ = ["iu_xray_datalist", "iu_xray_report"]

logger = logging.getLogger(__name__)


def _natural(name: str) -> tuple:
    """``2.xml`` before ``10.xml`` (the archive lists them as text: 1, 10, 100, ...)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", Path(name).name))


def _xml_files(reports: Path) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of each XML, read from the archive as a stream (nothing extracted) or from a folder."""
    if reports.is_dir():
        for path in sorted(reports.rglob("*.xml"), key=lambda p: _natural(str(p))):
            yield str(path), path.read_bytes()
        return
    if not reports.is_file():
        raise XRealInputError(str(reports), "no such file or folder")
    try:
        with tarfile.open(reports, "r|*") as archive:
            for member in archive:
                if member.isfile() and member.name.endswith(".xml"):
                    yield f"{reports}:{member.name}", archive.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise XRealInputError(str(reports), f"not a readable tar archive of XML reports ({err})") from err


def iu_xray_report(xml: bytes | str, source: str = "report") -> dict:
    """One OpenI XML report as ``{"report_id", "report", "mesh", "images"}``.

    ``report`` maps each ``AbstractText`` label in lower case (``findings``, ``impression``, ``indication``,
    ``comparison``) to its whitespace-collapsed text, always with ``findings`` and ``impression`` (``""`` when
    empty; IU's ``XXXX`` de-identification marks are kept). ``mesh`` lists the ``MeSH/major`` terms, ``images``
    the ``parentImage`` ids in document order. ``report_id`` is the ``uId`` (``CXR1``).

    Raises:
        XRealInputError: not well-formed XML, or a ``parentImage`` without an id, naming ``source``.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise XRealInputError(source, f"malformed XML: {err}") from err
    report = dict.fromkeys(REPORT_SECTIONS, "")
    for element in root.iter("AbstractText"):
        label = " ".join((element.get("Label") or "").lower().split())
        text = " ".join("".join(element.itertext()).split())
        if label and text:
            report[label] = f"{report[label]} {text}".strip() if report.get(label) else text
    images = [element.get("id") for element in root.iter("parentImage")]
    if not all(images):
        raise XRealInputError(source, "a parentImage element has no id")
    uid = root.find("uId")
    report_id = uid.get("id") if uid is not None and uid.get("id") else Path(source.rsplit(":", 1)[-1]).stem
    mesh = [" ".join(element.text.split()) for element in root.iterfind("MeSH/major") if (element.text or "").strip()]
    return {"report_id": report_id, "report": report, "mesh": mesh, "images": images}


def iu_xray_datalist(
    reports: str | Path,
    image_dir: str | Path | None = None,
    keep_imageless: bool = False,
    skip_invalid: bool = False,
) -> list[dict]:
    """One data dict per image of the IU X-ray reports, ordered by report number, then image order in the report.

    ``reports`` is ``NLMCXR_reports.tgz`` (read as a stream) or a folder of its XMLs (``ecgen-radiology/``). Keys:
    ``id`` (the ``parentImage`` id, e.g. ``CXR1_1_IM-0001-3001``, which names the PNG in ``NLMCXR_png.tgz``),
    ``report_id`` (``CXR1``), ``report`` (``findings``, ``impression`` and the other labelled sections; see
    :func:`iu_xray_report`), ``mesh`` (major MeSH terms; ``["normal"]`` for normal studies), and ``image``
    (``image_dir/<id>.png`` or ``.jpg``) with ``image_dir``. Images of one report share its text (copies).

    Image-text training needs pairs, so a report that names no image (104 of the 3,955) is left out (counted in
    an INFO log), unless ``keep_imageless``: then it gives one dict with ``id`` = ``report_id`` and no ``image``.

    Raises:
        XRealInputError: a malformed XML naming the archive and member (or file), or a missing image file; with
            ``skip_invalid`` these are skipped instead, counted and logged at the end.
    """
    reports = Path(reports)
    skips = RowSkips(str(reports), skip_invalid)
    parsed = []
    for name, data in _xml_files(reports):
        try:
            parsed.append((_natural(name), iu_xray_report(data, name)))
        except XRealInputError as err:
            skips.handle(err)
    parsed.sort(key=lambda pair: pair[0])
    result, imageless = [], 0
    for _, entry in parsed:
        common = {"report_id": entry["report_id"], "report": entry["report"], "mesh": entry["mesh"]}
        if not entry["images"]:
            imageless += 1
            if keep_imageless:
                result.append({"id": entry["report_id"], **common})
            continue
        for image_id in entry["images"]:
            try:
                image = find_image(image_dir, image_id, (".png", ".jpg"))
            except XRealInputError as err:
                skips.handle(err)
                continue
            item = {"id": image_id, **common, "report": dict(entry["report"]), "mesh": list(entry["mesh"])}
            result.append(item if image is None else {**item, "image": image})
    if imageless and not keep_imageless:
        logger.info("%s: left out %d report(s) that name no image", reports, imageless)
    skips.report()
    return result
