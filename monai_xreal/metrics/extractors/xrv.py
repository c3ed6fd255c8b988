# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""torchxrayvision's ``densenet121-res224-all`` CXR classifier as a feature extractor, on MONAI's DenseNet121.

Facts taken from torchxrayvision 1.5.7 (not imported here):

* Weight file: :data:`XRV_WEIGHTS_FILE`, published at :data:`XRV_WEIGHTS_URL`. It is a *whole pickled model*
  (``torch.save(model)``; xrv reads it with ``torch.load(weights_only=False)`` and copies ``.state_dict()``), so
  unpickling it needs torchxrayvision's classes and runs arbitrary code. It is never unpickled here: convert it once
  into a plain state dict with :data:`XRV_CONVERT_ONE_LINER`. Its keys are torchvision-style (``features.conv0.weight``,
  ``features.denseblock1.denselayer1.norm1.weight``, ``classifier.weight``), without any prefix; a state dict saved
  from an xrv model built with ``weights=...`` also holds ``op_threshs``, which is accepted and used.
* Calibration: the file holds no thresholds; xrv attaches the ``op_threshs`` of its table to the named weights and
  then returns ``op_norm(sigmoid(logits))``, a piecewise-linear map taking each threshold to 0.5
  (:func:`apply_op_threshs`). :data:`XRV_OP_THRESHS` copies the table's values for ``res224-all``.
* Input: ``xrv.datasets.normalize`` maps [0, maxval] to [-1024, 1024]; ``XRayCenterCrop`` crops the long side to a
  centred square (start ``size // 2 - crop // 2``); the model resizes to 224×224 with ``F.interpolate`` bilinear,
  ``antialias=True`` (its ``fix_resolution``). xrv's offline dataset pipeline resizes with skimage instead, which
  differs slightly; the in-model resize is the one reproduced here.
* Features (``features2``): ReLU of the last feature map (after ``norm5``), global average pool, 1024-d.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121

from monai_xreal.metrics.extractors.base import FeatureExtractor

__all__ = [
    "XRV_CONVERT_ONE_LINER",
    "XRV_OP_THRESHS",
    "XRV_PATHOLOGIES",
    "XRV_WEIGHTS_FILE",
    "XRV_WEIGHTS_URL",
    "XRVDenseNet121",
    "apply_op_threshs",
    "monai_to_xrv_key",
    "xrv_to_monai_key",
]

XRV_WEIGHTS_FILE = "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
XRV_WEIGHTS_URL = f"https://github.com/mlmed/torchxrayvision/releases/download/v1/{XRV_WEIGHTS_FILE}"
XRV_CONVERT_ONE_LINER = (
    "put the file in a folder DIR, then (torchxrayvision installed; it finds the file there and downloads nothing) "
    "python -c \"import torch, torchxrayvision as xrv; m = xrv.models.DenseNet(weights='densenet121-res224-all', "
    "cache_dir='DIR'); torch.save(m.state_dict(), 'xrv-densenet121-res224-all.pt')\""
)

# the output order of densenet121-res224-all (xrv's model_urls["all"]["labels"])
XRV_PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)
# xrv's model_urls["all"]["op_threshs"], in XRV_PATHOLOGIES order
XRV_OP_THRESHS: tuple[float, ...] = (
    0.07422872, 0.038290843, 0.09814756, 0.0098118475, 0.023601074, 0.0022490358, 0.010060724, 0.103246614,
    0.056810737, 0.026791653, 0.050318155, 0.023985857, 0.01939503, 0.042889766, 0.053369623, 0.035975814,
    0.20204692, 0.05015312,
)  # fmt: skip
INPUT_SIZE = 224

_XRV_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.(norm|conv)\.?([12])\.")  # ".?": old "norm.1"
_MONAI_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.layers\.")


def xrv_to_monai_key(key: str) -> str:
    """A torchvision-style (xrv) DenseNet-121 state-dict key as MONAI's ``DenseNet121`` names it."""
    key = _XRV_LAYER.sub(r"\1.layers.\2\3.", key)
    return re.sub(r"^classifier\.", "class_layers.out.", key)


def monai_to_xrv_key(key: str) -> str:
    """The inverse of :func:`xrv_to_monai_key`."""
    key = _MONAI_LAYER.sub(r"\1.", key)
    return re.sub(r"^class_layers\.out\.", "classifier.", key)


def apply_op_threshs(probabilities: torch.Tensor, op_threshs: torch.Tensor) -> torch.Tensor:
    """xrv's ``op_norm``: rescale ``(B, K)`` probabilities so each class's operating threshold lands on 0.5.

    Below the threshold ``t``: ``p / (2 t)``; at or above: ``1 - (1 - p) / (2 (1 - t))``; classes whose threshold is
    NaN give 0.5. Stays in [0, 1] and keeps gradients finite.
    """
    thresholds = op_threshs.to(probabilities).expand_as(probabilities)
    known = ~torch.isnan(thresholds)
    # NaN thresholds would make the unused branch NaN and poison the gradient through torch.where
    safe = torch.where(known, thresholds, torch.full_like(thresholds, 0.5))
    scaled = torch.where(probabilities < safe, probabilities / (2 * safe), 1 - (1 - probabilities) / (2 * (1 - safe)))
    return torch.where(known, scaled, torch.full_like(scaled, 0.5))


class XRVDenseNet121(FeatureExtractor):
    """torchxrayvision's ``densenet121-res224-all``: 1024-d features and 18 pathology probabilities of CXRs.

    Preprocessing of ``(B, 1, H, W)`` images in [0, 1]: ``x * 2048 - 1024`` to [-1024, 1024], centre crop of the long
    side to a square, bilinear resize with antialiasing to 224×224 (skipped when already that size). Differentiable.

    The network is ``monai.networks.nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=18)`` under
    ``densenet``; :meth:`load_published_state_dict` reads xrv's key names (:func:`xrv_to_monai_key`). Randomly
    initialised (MONAI's init) until then.
    """

    name = "xrv-densenet121-res224-all"
    feature_dim = 1024
    pathologies = XRV_PATHOLOGIES
    weights_file = XRV_WEIGHTS_FILE
    weights_source = XRV_WEIGHTS_URL
    convert_hint = XRV_CONVERT_ONE_LINER

    def __init__(self) -> None:
        super().__init__()
        self.densenet = DenseNet121(spatial_dims=2, in_channels=1, out_channels=len(XRV_PATHOLOGIES))
        # a constant of the named weights, not of the file: kept out of the state dict so files round-trip as published
        self.register_buffer("op_threshs", torch.tensor(XRV_OP_THRESHS, dtype=torch.float32), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` in [0, 1] to ``(B, 1, 224, 224)`` in [-1024, 1024]."""
        x = images * 2048 - 1024
        height, width = x.shape[2:]
        crop = min(height, width)
        top, left = height // 2 - crop // 2, width // 2 - crop // 2
        x = x[:, :, top : top + crop, left : left + crop]
        if crop != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True)
        return x

    def extract(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, 1024)`` features (xrv's ``features2``) of ``(B, 1, 224, 224)`` preprocessed inputs."""
        return F.adaptive_avg_pool2d(F.relu(self.densenet.features(inputs)), 1).flatten(1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 18)`` raw classifier logits of ``(B, 1, H, W)`` images in [0, 1], in :data:`XRV_PATHOLOGIES` order."""
        return self.densenet.class_layers.out(self(images))

    def pathology_probabilities(self, images: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """``(B, 18)`` probabilities in [0, 1] of ``(B, 1, H, W)`` images in [0, 1], in :data:`XRV_PATHOLOGIES` order.

        ``calibrated=True`` gives what ``xrv.models.DenseNet(weights="densenet121-res224-all")`` returns: the sigmoid
        rescaled by the operating thresholds (:func:`apply_op_threshs`, 0.5 = the threshold); ``False`` the bare
        sigmoid.
        """
        probabilities = torch.sigmoid(self.logits(images))
        return apply_op_threshs(probabilities, self.op_threshs) if calibrated else probabilities

    def _published_to_own(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # only a state dict saved from xrv's model (not the published file) carries them; a wrong length stays in
        # the dict and is reported as unexpected
        if "op_threshs" in state and state["op_threshs"].numel() == len(XRV_PATHOLOGIES):
            self.op_threshs.copy_(state.pop("op_threshs").reshape(-1))
        return {f"densenet.{xrv_to_monai_key(k)}": v for k, v in state.items()}

    def _own_to_published_key(self, key: str) -> str:
        return monai_to_xrv_key(key.removeprefix("densenet."))
