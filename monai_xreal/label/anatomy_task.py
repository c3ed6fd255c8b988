# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""``cxr_anatomy``: MONAI Label's segmentation flow over the ``cxr_anatomy_segmentation`` bundle."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer
from monai.transforms import Compose, Invertd, SaveImage, SaveImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.utils.others.generic import name_to_device

from monai_xreal.bundle import read_bundle_config
from monai_xreal.errors import XRealInputError
from monai_xreal.label.params import RESULT_EXTENSIONS, GenerateLimits
from monai_xreal.label.results import check_image_size, check_upload, write_result
from monai_xreal.metrics.adherence import load_segmenter

__all__ = ["CXRAnatomyTask"]


class CXRAnatomyTask(BasicInferTask):
    """Segment right lung, left lung, heart and upper mediastinum on a CXR, for editing and for ``xreal_generate``.

    The bundle's own ``preprocessing``, ``inferer`` and ``postprocessing`` (its ``SaveImage`` left out) run as MONAI
    Label's pre-transforms, inferer and post-transforms; an ``Invertd`` over the preprocessing brings the label map
    back to the uploaded image's grid and geometry. The result is a uint8 label map (``result_extension``
    ``.nii.gz`` by default, ``.nii`` or ``.png``) whose values are the bundle's labels, so it can be edited in the
    viewer and sent back as ``xreal_generate``'s anatomy map.

    Args:
        bundle_root: the ``cxr_anatomy_segmentation`` bundle.
        limits: upload and image-size limits (shared with ``xreal_generate``).
        device: where the network runs; ``None``: the request's ``device`` (MONAI Label's convention).
    """

    def __init__(
        self, bundle_root: str | Path, limits: GenerateLimits | None = None, device: str | None = None
    ) -> None:
        self.bundle_root = Path(bundle_root)
        self.parser = read_bundle_config(self.bundle_root)
        metadata = self.parser.get("_meta_", {})
        channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
        self.limits = limits or GenerateLimits()
        self.fixed_device = device
        self._lock = threading.Lock()
        # one instance for every request: Invertd checks that it inverts the very transforms that ran
        self.preprocessing: Compose = self.parser.get_parsed_content("preprocessing", instantiate=True)
        super().__init__(
            path=str(self.bundle_root / "models" / "model.pt"),
            network=None,
            type=InferType.SEGMENTATION,
            labels={name: int(value) for value, name in channels.items() if int(value) != 0},
            dimension=2,
            description=f"Chest X-ray anatomy segmentation ({metadata.get('name', self.bundle_root.name)} "
            f"{metadata.get('version', '')})".strip(),
            config={"result_extension": ".nii.gz"},
        )

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return list(self.preprocessing.transforms)

    def inferer(self, data=None) -> Inferer:
        return self.parser.get_parsed_content("inferer", lazy=False)

    def post_transforms(self, data=None) -> Sequence[Callable]:
        post = self.parser.get_parsed_content("postprocessing", lazy=False)
        kept = [t for t in post.transforms if not isinstance(t, (SaveImage, SaveImaged))]
        restore = Invertd(keys="pred", transform=self.preprocessing, orig_keys="image", nearest_interp=True)
        return [*kept, restore]

    def __call__(self, request, callbacks=None):
        check_upload(request.get("image"), "image", self.limits.max_upload_bytes)
        extension = request.get("result_extension") or ".nii.gz"
        if extension not in RESULT_EXTENSIONS:
            raise XRealInputError("result_extension", f"{extension!r} is not one of {sorted(RESULT_EXTENSIONS)}")
        if self.fixed_device:
            request = {**request, "device": self.fixed_device}
        with self._lock:
            return super().__call__(request, callbacks)

    def run_pre_transforms(self, data: dict[str, Any], transforms):
        data = super().run_pre_transforms(data, transforms)
        source = [int(s) for s in data["image"].meta.get("spatial_shape", ())]  # as read, before resizing
        if source and max(source) > self.limits.max_image_size:
            check_image_size(torch.empty((1, *source), device="meta"), "image", self.limits.max_image_size)
        return data

    def load(self, device: str | None = None) -> None:
        """Build the network now rather than on the first request."""
        self._get_network(self.fixed_device or name_to_device(device), None)

    def _get_network(self, device, data):
        device = str(device)
        if device not in self._networks:
            self._networks[device] = (load_segmenter(self.bundle_root, device), 0)
        return self._networks[device][0]

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[Any, Any]:
        pred = data["pred"]
        path = write_result(torch.as_tensor(pred).to(torch.uint8), data.get("result_extension") or ".nii.gz",
                            labels=True, affine=getattr(pred, "affine", None))  # fmt: skip
        return path, {"label_names": self.labels, "shape": list(pred.shape[1:])}
