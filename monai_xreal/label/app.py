# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""The MONAI Label app: ``xreal_generate`` and ``cxr_anatomy`` from local bundles, bad requests as HTTP 4xx."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask

from monai_xreal.errors import XRealInputError
from monai_xreal.label.bundles import resolve_bundle, resolve_models
from monai_xreal.label.params import GenerateLimits, RequestTooLarge
from monai_xreal.version import __version__

__all__ = ["XRealLabelApp"]

logger = logging.getLogger(__name__)


class XRealLabelApp(MONAILabelApp):
    """MONAI Label app serving controllable CXR generation and the anatomy segmenter.

    Options (``monailabel start_server ... --conf KEY VALUE``):

    - ``models``: ``all`` (default) or a comma-separated subset of ``xreal_generate,xreal_edit,cxr_anatomy``;
    - ``bundles``: the folder holding the bundles (default: this package's ``bundles/``);
      ``bundle_xreal_generate`` / ``bundle_xreal_edit`` / ``bundle_cxr_anatomy``: another bundle for one task, a name in that folder or a
      path (e.g. a bundle written by ``monai-xreal convert``);
    - ``device``: ``cpu``, ``cuda``, ``cuda:1``... for every request (default: the request's, else CUDA if any);
    - ``preload``: ``true`` builds the networks at start rather than on the first request;
    - limits: ``max_upload_mb`` (64), ``max_image_size`` (4096), ``max_steps`` (1000), ``max_boxes`` (64),
      ``max_prompt_chars`` (2000).

    Nothing is downloaded: ``zoo_source`` and ``sam2`` are not used by this app (``monai-xreal serve`` still passes
    their offline values for MONAI Label's own code).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        try:
            self.limits = GenerateLimits.from_conf(conf)
        except XRealInputError as err:
            raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"--conf {err}") from None
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai_xreal",
            description="Controllable chest X-ray generation (XReal) and CXR anatomy segmentation",
            version=__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        from monai_xreal.label.anatomy_task import CXRAnatomyTask
        from monai_xreal.label.edit_task import XRealEditTask
        from monai_xreal.label.generate_task import XRealGenerateTask

        try:
            names = resolve_models(self.conf.get("models", "all"))
            roots = {name: resolve_bundle(name, self.conf) for name in names}
        except XRealInputError as err:
            raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"--conf {err}") from None
        device = self.conf.get("device") or None
        classes = {"xreal_generate": XRealGenerateTask, "xreal_edit": XRealEditTask, "cxr_anatomy": CXRAnatomyTask}
        infers: dict[str, InferTask] = {}
        for name in names:
            infers[name] = classes[name](roots[name], limits=self.limits, device=device)
            logger.info(f"+++ Adding Inferer:: {name} => {infers[name].bundle_root}")
        if self.conf.get("preload", "false").lower() in ("true", "1", "yes"):
            for task in infers.values():
                task.load(device)
        return infers

    def infer(self, request, datastore=None):
        """MONAI Label's ``infer`` with HTTP answers for bad requests (it would answer 500 for all of them).

        Unknown model: 404. A datastore image that does not exist, or has no label under ``anatomy_label_tag``:
        404. Bad input (unreadable or wrong-shaped mask, non-numeric parameter...): 422. Beyond the server's
        limits: 413. Each with a one-line ``detail``.
        """
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(404, f"unknown model {model!r}; this server runs {sorted(self._infers)}")
        request = dict(request)
        datastore = datastore or self.datastore()
        image = request.get("image")
        if isinstance(image, str) and image and not Path(image).exists():
            if not datastore.get_image_uri(image):
                raise HTTPException(404, f"image {image!r} is not in the datastore")
            tag = request.get("anatomy_label_tag")
            if model == "xreal_generate" and tag:  # the anatomy saved (e.g. edited in the viewer) for this image
                label = datastore.get_label_uri(image, tag)
                if not label:
                    raise HTTPException(404, f"image {image!r} has no label tagged {tag!r} in the datastore")
                request["image"] = label
        if model in ("xreal_generate", "xreal_edit"):
            request["save_label"] = False  # a generated or edited image is not a label of its input
        try:
            return super().infer(request, datastore)
        except RequestTooLarge as err:
            raise HTTPException(413, str(err)) from None
        except XRealInputError as err:
            raise HTTPException(422, str(err)) from None
