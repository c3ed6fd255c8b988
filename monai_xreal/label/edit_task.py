# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``xreal_edit``: a MONAI Label infer task that repaints a region of the sent radiograph and returns it in its own
format, unchanged outside the region."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from monai_xreal.errors import XRealInputError, XRealInputWarning
from monai_xreal.io import IMAGE_FORMATS, load_mask, read_radiograph, write_radiograph
from monai_xreal.label.params import GenerateLimits, GenerateParams
from monai_xreal.label.pipeline_task import PipelineInferTask
from monai_xreal.label.results import check_image_size, check_upload
from monai_xreal.pipeline.settings import EDIT_KNOBS, KNOBS
from monai_xreal.synthesis.editing import RegionEdit, edit_radiograph, region_record
from monai_xreal.synthesis.provenance import mask_record
from monai_xreal.transforms import BoxesToMask

__all__ = ["XRealEditTask"]


class XRealEditTask(PipelineInferTask):
    """Edit a radiograph inside a region: add the prompt's finding, or remove one with ``"No Finding"``.

    Request (MONAI Label's ``POST /infer/xreal_edit``):

    - the radiograph as the ``file`` form field, or a datastore image id (``?image=``): DICOM, PNG (8/16-bit grey)
      or NIfTI;
    - the edit region as the ``label`` form field (a mask of the image's size, e.g. drawn in the viewer), or
      ``boxes`` in ``params`` (``(x_min, y_min, x_max, y_max)`` in the image's pixels along MONAI's reader axes);
    - ``params`` (JSON): ``prompt``, ``seed``, ``steps``, ``guidance``, ``eta``, ``blending``,
      ``pathology_feather``, ``scheduler``, ``boxes`` (the other generation parameters do not apply to an edit).

    Response: the edited radiograph in the input's own format (a DICOM keeps its study, with a new series and
    instance, marked derived and synthetic; outside the region the stored values are the input's, bit for bit), and
    JSON echoing the parameters as used, the number of changed pixels and the provenance record.

    Args:
        bundle_root: the generator bundle.
        limits: what one request may ask for.
        device: where the networks run (see :class:`~monai_xreal.label.generate_task.XRealGenerateTask`).
    """

    def __init__(
        self, bundle_root: str | Path, limits: GenerateLimits | None = None, device: str | None = None
    ) -> None:
        super().__init__(
            bundle_root,
            limits,
            device,
            labels={"edit region": 1},
            config={},
            prompt="No Finding",
            description="Edit a radiograph inside a region: add a finding or remove one",
        )

    def __call__(self, request: dict) -> tuple[str, dict]:
        begin = time.perf_counter()
        params = GenerateParams.from_request(request, self.limits)
        radiograph = read_radiograph(check_upload(request.get("image"), "image", self.limits.max_upload_bytes))
        check_image_size(radiograph.image, "image", self.limits.max_image_size)
        shape = tuple(radiograph.image.shape[1:])
        region, record = self._region(request, params, shape)
        device = self.request_device(request)
        with self._lock:
            pipe = self.pipeline(device)
            knobs = {knob.name: getattr(params, knob.alias or knob.name) for knob in KNOBS if knob.name in EDIT_KNOBS}
            settings = pipe.settings(params.scheduler, **knobs)
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", XRealInputWarning)
                edited = edit_radiograph(pipe, radiograph, [RegionEdit(region, params.prompt, record)], settings,
                                         self.bundle_record(pipe), params.seed)  # fmt: skip
            infer_seconds = time.perf_counter() - started
        handle, path = tempfile.mkstemp(prefix="monai_xreal_", suffix=IMAGE_FORMATS[radiograph.fmt])
        os.close(handle)
        try:
            write_radiograph(radiograph, edited.stored, path, edited.record, description=params.prompt or "edit")
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        echo = {key: params.echo()[key] for key in ("prompt", "seed", "boxes")}
        return path, {
            **echo,
            **{knob.alias or knob.name: getattr(settings, knob.name) for knob in KNOBS if knob.name in EDIT_KNOBS},
            "scheduler": settings.scheduler,
            "region": "mask" if request.get("label") else "boxes",
            "format": radiograph.fmt,
            "changed_pixels": edited.record["edit"]["changed_pixels"],
            "bundle": self.metadata.get("name", self.bundle_root.name),
            "bundle_version": self.metadata.get("version"),
            "shape": list(shape),
            "device": str(device),
            "latencies": {"infer": round(infer_seconds, 3), "total": round(time.perf_counter() - begin, 3)},
            "warnings": sorted({str(w.message) for w in caught if issubclass(w.category, XRealInputWarning)}),
            "provenance": edited.record,
        }

    def _region(self, request: dict, params: GenerateParams, shape: tuple[int, ...]):
        """The ``(1, X, Y)`` edit region from the ``label`` upload or the boxes, and its record."""
        if request.get("label"):
            if params.boxes:
                raise XRealInputError("region", "send a region mask or boxes, not both")
            mask = load_mask(check_upload(request["label"], "region", self.limits.max_upload_bytes), "region")
            if tuple(mask.shape[1:]) != shape:
                raise XRealInputError("region", f"shape {tuple(mask.shape[1:])} differs from the image's {shape}")
            return mask, mask_record(None, mask)
        if not params.boxes:
            raise XRealInputError("region", "send the edit region as the label file or as boxes")
        boxes = np.asarray(params.boxes, dtype=np.float32)
        return BoxesToMask(shape)(boxes), region_record(None, None, params.boxes)
