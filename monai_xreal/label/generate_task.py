# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``xreal_generate``: a MONAI Label infer task that returns a synthetic CXR following the sent conditions."""

from __future__ import annotations

import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Resize

from monai_xreal.bundle import read_bundle_config
from monai_xreal.errors import XRealInputError, XRealInputWarning
from monai_xreal.io import load_mask
from monai_xreal.label.params import GenerateLimits, GenerateParams
from monai_xreal.label.pipeline_task import PipelineInferTask
from monai_xreal.label.results import check_image_size, check_upload, write_result
from monai_xreal.pipeline.settings import KNOBS
from monai_xreal.synthesis.provenance import mask_record
from monai_xreal.synthesis.service import Condition, GenerationService, Sample

__all__ = ["XRealGenerateTask"]


class XRealGenerateTask(PipelineInferTask):
    """Generate one CXR from an anatomy label map, an optional pathology mask or boxes, and a prompt.

    Request (MONAI Label's ``POST /infer/xreal_generate``):

    - the anatomy label map as the ``file`` form field, or a datastore image id (``?image=``) that is one; any
      format MONAI's ``LoadImage`` reads (PNG, NIfTI, DICOM), values in the bundle's label set;
    - optionally a pathology mask (1 where the finding goes, same shape as the anatomy map) as the ``label`` form
      field, or ``boxes`` in ``params``;
    - ``params`` (JSON): ``prompt``, ``seed``, ``steps``, ``guidance``, ``eta``, ``anatomy_soft_value``,
      ``anatomy_step_fraction``, ``scheduler``, ``boxes``, ``output_grid`` (``"input"``: the result is resized to
      the anatomy map's grid and geometry, so it overlays it; ``"model"``: the bundle's grid) and
      ``result_extension`` (``.nii.gz``, ``.nii`` or ``.png``). See :class:`~monai_xreal.label.params.GenerateParams`.

    Response: the image file (float [0, 1] in NIfTI, 8-bit in PNG) and JSON echoing every parameter as used (bundle
    defaults filled in, the drawn seed included), the bundle's name and version, the shapes and the latencies.

    Args:
        bundle_root: the generator bundle (``cxr_xreal`` or one written by ``monai-xreal convert``).
        limits: what one request may ask for.
        device: where the networks run; ``None``: the request's ``device`` if this machine has it, else CUDA if
            available, else the CPU.
    """

    required_weights = ("unet", "autoencoder", "anatomy_controller")

    def __init__(
        self, bundle_root: str | Path, limits: GenerateLimits | None = None, device: str | None = None
    ) -> None:
        labels = read_bundle_config(Path(bundle_root)).get_parsed_content("anatomy_labels")
        super().__init__(
            bundle_root, limits, device,
            labels={name: int(value) for value, name in labels.items() if int(value) != 0},
            description="Generate a chest X-ray that follows an anatomy label map, a pathology region and a prompt",
            config={"output_grid": "input", "result_extension": ".nii.gz"},
        )  # fmt: skip

    def __call__(self, request: dict) -> tuple[str, dict]:
        begin = time.perf_counter()
        params = GenerateParams.from_request(request, self.limits)
        anatomy = load_mask(check_upload(request.get("image"), "anatomy", self.limits.max_upload_bytes),
                            "anatomy", keep_meta=True)  # fmt: skip
        check_image_size(anatomy, "anatomy", self.limits.max_image_size)
        pathology = self._pathology(request, params, anatomy)
        device = self.request_device(request)

        with self._lock:  # one pipeline per device; its prompt cache is not shared between threads
            pipe = self.pipeline(device)
            knobs = {knob.name: getattr(params, knob.alias or knob.name) for knob in KNOBS}
            settings = pipe.settings(params.scheduler, **knobs)
            service = GenerationService(pipe, self.bundle_record(pipe), settings, device, datetime.now(timezone.utc))
            extra = {"demographics": params.demographics} if params.demographics else {}
            condition = Condition(anatomy, pathology, params.model_prompt, mask_record(None, anatomy),
                                  self._pathology_record(pathology, params), extra)  # fmt: skip
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:  # doubtful input: told in the response
                warnings.simplefilter("always", XRealInputWarning)
                generated = next(service.generate(condition, [[Sample(params.seed)]]))
            infer_seconds = time.perf_counter() - started

        image, affine = self._to_output_grid(generated.image.cpu(), anatomy, params.output_grid, pipe.spatial_shape)
        path = write_result(image, params.result_extension, affine=affine, provenance=generated.record)
        return path, {
            **params.echo(),
            **{knob.alias or knob.name: getattr(settings, knob.name) for knob in KNOBS},
            "scheduler": settings.scheduler,
            "pathology": "mask" if request.get("label") else "boxes" if params.boxes else "none",
            "bundle": self.metadata.get("name", self.bundle_root.name),
            "bundle_version": self.metadata.get("version"),
            "input_shape": list(anatomy.shape[1:]),
            "model_shape": list(pipe.spatial_shape),
            "output_shape": list(image.shape[1:]),
            "device": str(device),
            "latencies": {"infer": round(infer_seconds, 3), "total": round(time.perf_counter() - begin, 3)},
            "warnings": sorted({str(w.message) for w in caught if issubclass(w.category, XRealInputWarning)}),
            "provenance": generated.record,
        }

    @staticmethod
    def _pathology_record(pathology, params: GenerateParams) -> dict | None:
        """Uploads are temporary: a mask is recorded by its array's digest, boxes as sent."""
        if isinstance(pathology, torch.Tensor):
            return mask_record(None, pathology)
        return {"boxes": params.boxes} if params.boxes else None

    def _pathology(self, request: dict, params: GenerateParams, anatomy: torch.Tensor):
        """``(1, X, Y)`` mask from the ``label`` upload, ``(N, 4)`` boxes from params, or ``None``."""
        if not request.get("label"):
            return np.asarray(params.boxes, dtype=np.float32) if params.boxes else None
        if params.boxes:
            raise XRealInputError("pathology", "send a pathology mask or boxes, not both")
        path = check_upload(request["label"], "pathology", self.limits.max_upload_bytes)
        mask = load_mask(path, "pathology")
        if mask.shape != anatomy.shape:
            raise XRealInputError(
                "pathology", f"shape {tuple(mask.shape[1:])} differs from the anatomy map's {tuple(anatomy.shape[1:])}"
            )
        return mask

    @staticmethod
    def _to_output_grid(image: torch.Tensor, anatomy, output_grid: str, model_shape) -> tuple[torch.Tensor, Any]:
        """The ``(1, h, w)`` model-grid image on the requested grid, with the affine that places it on the input."""
        if output_grid == "model":
            return image, Resize(tuple(model_shape), mode="nearest")(anatomy).affine
        if tuple(image.shape[1:]) != tuple(anatomy.shape[1:]):
            resize = Resize(tuple(anatomy.shape[1:]), mode="bilinear", anti_aliasing=True)
            image = torch.as_tensor(resize(image)).clamp(0, 1)
        return image, anatomy.affine
