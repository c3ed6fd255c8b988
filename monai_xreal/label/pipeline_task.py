# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""What the infer tasks that run a generator bundle's pipeline share: the bundle, one pipeline per device built on
first use, the limits, the device choice and the bundle's provenance record."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.utils.others.generic import device_list, name_to_device

from monai_xreal.bundle import read_bundle_config, sampling_defaults, weight_file
from monai_xreal.errors import XRealInputError
from monai_xreal.label.params import GenerateLimits
from monai_xreal.synthesis.provenance import bundle_record

__all__ = ["PipelineInferTask"]


class PipelineInferTask(InferTask):
    """An infer task over a generator bundle's :class:`~monai_xreal.pipeline.XRealPipeline`.

    Args:
        bundle_root: the generator bundle (``cxr_xreal`` or one written by ``monai-xreal convert``).
        limits: what one request may ask for.
        device: where the networks run; ``None``: the request's ``device`` if this machine has it, else CUDA if
            available, else the CPU.
        labels, description, config: MONAI Label's task fields (the bundle's name and version are appended to the
            description; ``config`` adds to the shared ``prompt``, ``seed``, ``steps`` and ``guidance`` (the
            bundle's defaults), ``scheduler`` and ``device``).
        prompt: the prompt the viewer offers first.
    """

    required_weights: tuple[str, ...] = ("unet", "autoencoder")

    def __init__(
        self,
        bundle_root: str | Path,
        limits: GenerateLimits | None,
        device: str | None,
        labels: Mapping[str, int],
        description: str,
        config: Mapping[str, Any],
        prompt: str = "",
    ) -> None:
        self.bundle_root = Path(bundle_root)
        self.limits = limits or GenerateLimits()
        self.device = device
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._bundle_record: dict | None = None
        parser = read_bundle_config(self.bundle_root)
        self.metadata: dict = parser.get("_meta_", {})
        defaults = sampling_defaults(parser)
        name = f"{self.metadata.get('name', self.bundle_root.name)} {self.metadata.get('version', '')}".strip()
        shared = {"prompt": prompt, "seed": "", "steps": int(defaults.get("num_inference_steps", 0)) or "",
                  "guidance": float(defaults.get("guidance_scale", 0.0)) or "", "scheduler": ""}  # fmt: skip
        super().__init__(type=InferType.OTHERS, labels=dict(labels), dimension=2, description=f"{description} ({name})",
                         config={**shared, **config, "device": device_list()})  # fmt: skip

    def is_valid(self) -> bool:
        """Whether the bundle has every weight file this task needs."""
        try:
            for component in self.required_weights:
                weight_file(self.bundle_root, component)
        except XRealInputError:
            return False
        return True

    def load(self, device: str | None = None) -> None:
        """Build the networks now rather than on the first request."""
        self.pipeline(self.device or name_to_device(device))

    def request_device(self, request: Mapping) -> str:
        return self.device or name_to_device(request.get("device"))

    def pipeline(self, device: str):
        """The bundle's pipeline on ``device``, built once and kept (call it holding ``self._lock``: a pipeline's
        prompt cache is not shared between threads)."""
        from monai_xreal.pipeline import XRealPipeline

        if device not in self._pipelines:
            self._pipelines[device] = XRealPipeline.from_bundle(self.bundle_root, device=device)
        return self._pipelines[device]

    def bundle_record(self, pipe) -> dict:
        """The bundle's provenance record (weight digests), computed once."""
        if self._bundle_record is None:
            self._bundle_record = bundle_record(pipe, self.bundle_root)
        return self._bundle_record
