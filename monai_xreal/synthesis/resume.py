# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""An output folder that a run can continue: which images are finished, and who a resumed run files DICOMs under."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from monai_xreal.errors import XRealInputError
from monai_xreal.io.dicom import DicomIdentity, dicom_uid
from monai_xreal.io.hashing import sha256_file
from monai_xreal.synthesis.writer import remove_partials

__all__ = ["OutputFolder"]


class OutputFolder:
    """The folder ``generate`` writes ``<stem><ext>`` + ``<stem>.json`` pairs into, possibly from an earlier run.

    On opening, files a killed writer left half-made are removed. An image counts as finished when its file and
    sidecar are there, the file has the SHA-256 its sidecar records, and the sidecar says it was made from the same
    bundle weights, prompt, masks and settings with the same seed. A pair made otherwise is never overwritten: the
    run stops with an error naming it.

    Args:
        path: the output folder (it need not exist yet).
        ext: the extension of the images (``.png``, ``.nii.gz``, ...).
    """

    def __init__(self, path: str | Path, ext: str) -> None:
        self.path, self.ext = Path(path), ext
        if self.path.is_dir():
            remove_partials(self.path)

    def finished(self, stem: str, service, condition, seed: int) -> bool:
        """Whether ``<stem>`` is finished by this run's rules (see the class); raises for a foreign pair."""
        image, sidecar = self.path / f"{stem}{self.ext}", self.path / f"{stem}.json"
        if not sidecar.is_file():
            if image.exists():
                raise XRealInputError("output-dir", f"{image} exists and is not an image this command made; choose "
                                      "another --output-dir")  # fmt: skip
            return False
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False  # unreadable: made again
        if not image.is_file() or record.get("output", {}).get("sha256") != sha256_file(image):
            return False  # the image is missing or damaged: made again
        differing = _differences(record, service, condition, seed)
        if differing:
            raise XRealInputError("output-dir", f"{sidecar} was made with other {', '.join(differing)}; run with the "
                                  "same options to continue, or choose another --output-dir")  # fmt: skip
        return True

    def dicom_identities(self, created: datetime, patient_name: str, patient_id: str) -> Callable[[int], DicomIdentity]:
        """``index -> DicomIdentity``: one study and series per run (a resumed run keeps those of the images already
        in the folder), a fresh instance per image."""
        study, series = dicom_uid(), dicom_uid()
        for sidecar in self.path.glob("*.json") if self.path.is_dir() else ():
            try:
                dicom = json.loads(sidecar.read_text(encoding="utf-8")).get("output", {}).get("dicom")
            except (OSError, ValueError):
                continue
            if dicom:
                study, series = dicom["study_uid"], dicom["series_uid"]
                break

        def identity(index: int) -> DicomIdentity:
            return DicomIdentity(study, series, dicom_uid(), created, patient_name, patient_id,
                                 instance_number=index + 1)  # fmt: skip

        return identity


def _differences(record: dict, service, condition, seed: int) -> list[str]:
    """What of the recorded image differs from what this run would make for ``seed``."""
    sampling = record.get("sampling", {})
    wanted = {**service.settings.as_dict(), "seed": seed}
    checks = {
        "bundle weights": record.get("bundle", {}).get("model_sha256") == service.bundle.get("model_sha256"),
        "prompt": record.get("prompt") == condition.prompt,
        "sampling settings": all(sampling.get(k) == v for k, v in wanted.items()),
    }
    for key, mask in (("anatomy", condition.anatomy_record), ("pathology", condition.pathology_record)):
        recorded = record.get(key)
        checks[f"{key} mask"] = (recorded is None) == (mask is None) and (
            mask is None or recorded.get("array_sha256") == mask.get("array_sha256")
        )
    return [name for name, same in checks.items() if not same]
