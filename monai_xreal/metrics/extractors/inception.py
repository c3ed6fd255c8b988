# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Inception-v3 in its FID form: the 2015-12-05 TensorFlow graph ported to PyTorch, 2048-d pool3 features.

This is the network behind the FID numbers of pytorch-fid and torch-fidelity (and of the original TTUR code). It differs
from torchvision's Inception-v3 in three ways that change the features: 1008 output classes, average pools that leave
the zero padding out of the mean (TensorFlow's ``SAME`` pooling), and max instead of average pooling in the last
block's pool branch. Module and parameter names follow the published weight files, so both load directly:

* pytorch-fid: ``pt_inception-2015-12-05-6726825d.pth`` (:data:`PYTORCH_FID_WEIGHTS_URL`);
* torch-fidelity: ``weights-inception-2015-12-05-6726825d.pth`` (:data:`TORCH_FIDELITY_WEIGHTS_URL`); its module
  tree carries the same parameter names (its extra pooling modules hold no tensors), so no key map is needed.

The two libraries differ only in the input definition, see :class:`FIDInceptionV3`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from monai_xreal.metrics.extractors.base import FeatureExtractor

__all__ = [
    "PYTORCH_FID_WEIGHTS_FILE",
    "PYTORCH_FID_WEIGHTS_URL",
    "TORCH_FIDELITY_WEIGHTS_FILE",
    "TORCH_FIDELITY_WEIGHTS_URL",
    "FIDInceptionV3",
    "InputDefinition",
    "resize_bilinear_tf1",
]

PYTORCH_FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_WEIGHTS_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_WEIGHTS_FILE}"
)
TORCH_FIDELITY_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_WEIGHTS_URL = (
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TORCH_FIDELITY_WEIGHTS_FILE}"
)

InputDefinition = Literal["pytorch-fid", "torch-fidelity"]
_WEIGHTS = {
    "pytorch-fid": (PYTORCH_FID_WEIGHTS_FILE, PYTORCH_FID_WEIGHTS_URL),
    "torch-fidelity": (TORCH_FIDELITY_WEIGHTS_FILE, TORCH_FIDELITY_WEIGHTS_URL),
}
INPUT_SIZE = 299


class ConvBN(nn.Module):
    """Bias-free convolution, batch norm (TensorFlow's epsilon 1e-3) and ReLU; holds ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's SAME average pool divides by the number of real pixels in the window, not by 9
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _pair_1x7(channels_in: int, channels_out: int, vertical: bool) -> ConvBN:
    """A factorised 7-tap convolution along one axis: ``(7, 1)`` if ``vertical`` else ``(1, 7)``."""
    kernel, padding = ((7, 1), (3, 0)) if vertical else ((1, 7), (0, 3))
    return ConvBN(channels_in, channels_out, kernel, padding=padding)


class MixedA(nn.Module):
    """35×35 block (``Mixed_5b``–``5d``): 1×1, 5×5, double 3×3 and pooled 1×1 branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        five = self.branch5x5_2(self.branch5x5_1(x))
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), five, double, self.branch_pool(_tf_avg_pool(x))], dim=1)


class ReductionA(nn.Module):
    """35×35 → 17×17 (``Mixed_6a``): strided 3×3, strided double 3×3 and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), double, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class MixedC(nn.Module):
    """17×17 block (``Mixed_6b``–``6e``) with factorised 7×7 convolutions of ``channels_7x7`` inner channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = _pair_1x7(c7, c7, vertical=False)
        self.branch7x7_3 = _pair_1x7(c7, 192, vertical=True)
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = _pair_1x7(c7, c7, vertical=True)
        self.branch7x7dbl_3 = _pair_1x7(c7, c7, vertical=False)
        self.branch7x7dbl_4 = _pair_1x7(c7, c7, vertical=True)
        self.branch7x7dbl_5 = _pair_1x7(c7, 192, vertical=False)
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(_tf_avg_pool(x))], dim=1)


class ReductionB(nn.Module):
    """17×17 → 8×8 (``Mixed_7a``): strided 3×3, 7×7-then-strided-3×3 and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = _pair_1x7(192, 192, vertical=False)
        self.branch7x7x3_3 = _pair_1x7(192, 192, vertical=True)
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_2(self.branch3x3_1(x))
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([three, seven, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class MixedE(nn.Module):
    """8×8 block (``Mixed_7b``, ``7c``) whose 3×3 branches split into parallel 1×3 and 3×1 convolutions.

    ``pool="max"`` for ``Mixed_7c``: the 2015-12-05 graph max-pools there (unlike the paper), and FID inherits it.
    """

    def __init__(self, in_channels: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _tf_avg_pool(x)
        parts = [self.branch1x1(x), self.branch3x3_2a(three), self.branch3x3_2b(three)]
        parts += [self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double), self.branch_pool(pooled)]
        return torch.cat(parts, dim=1)


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow 1.x ``resize_bilinear`` (``align_corners=False``, no half-pixel centres) of ``(B, C, H, W)``.

    Output pixel ``i`` samples input coordinate ``i * in / out`` (so the grid is anchored at the top-left corner, not
    centred as in ``F.interpolate``), clamped at the last row/column. Interpolates along width then height, in float32,
    as torch-fidelity's bit-exact port does.

    Returns:
        ``(B, C, size[0], size[1])`` in ``images``' dtype.
    """

    def axis(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(in_size / out_size, dtype=torch.float32, device=images.device)
        position = torch.arange(out_size, dtype=torch.float32, device=images.device) * scale
        low = position.long()  # positions are >= 0, so truncation is floor
        return low, (low + 1).clamp_max(in_size - 1), (position - low.float()).to(images.dtype)

    (top, bottom, dy), (left, right, dx) = axis(images.shape[2], size[0]), axis(images.shape[3], size[1])
    rows = [images.index_select(2, index) for index in (top, bottom)]
    across = [r.index_select(3, left) + (r.index_select(3, right) - r.index_select(3, left)) * dx for r in rows]
    return across[0] + (across[1] - across[0]) * dy.view(-1, 1)


class FIDInceptionV3(FeatureExtractor):
    """The FID Inception-v3 returning 2048-d pool3 features of grayscale CXRs, per one library's input definition.

    Input definitions (for ``(B, 1, H, W)`` images in [0, 1], repeated to 3 identical channels):

    * ``"pytorch-fid"``: ``F.interpolate`` bilinear to 299×299 (``align_corners=False``), then ``2x - 1`` to [-1, 1].
      Differentiable. (pytorch-fid's command line reads 8-bit files, so its numbers for saved images are those of
      ``round(255 x) / 255``.)
    * ``"torch-fidelity"``: quantised to the uint8 input torch-fidelity requires as ``floor(255 x + 0.5)`` (as
      torchvision's ``save_image`` writes 8-bit files), TensorFlow-1 bilinear resize to 299×299
      (:func:`resize_bilinear_tf1`), then ``(x - 128) / 128``. Not differentiable (the quantisation).

    Args:
        input_definition: ``"pytorch-fid"`` or ``"torch-fidelity"``; also picks the weight file named in errors.

    The weights are randomly initialised (He-normal convolutions, identity batch norms) until
    :meth:`load_published_state_dict`.
    """

    feature_dim = 2048

    def __init__(self, input_definition: InputDefinition = "pytorch-fid") -> None:
        super().__init__()
        if input_definition not in _WEIGHTS:
            raise ValueError(f"input_definition must be one of {sorted(_WEIGHTS)}, got {input_definition!r}")
        self.input_definition = input_definition
        self.name = f"inception-{input_definition}"
        self.weights_file, self.weights_source = _WEIGHTS[input_definition]
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = MixedA(192, pool_features=32)
        self.Mixed_5c = MixedA(256, pool_features=64)
        self.Mixed_5d = MixedA(288, pool_features=64)
        self.Mixed_6a = ReductionA(288)
        self.Mixed_6b = MixedC(768, channels_7x7=128)
        self.Mixed_6c = MixedC(768, channels_7x7=160)
        self.Mixed_6d = MixedC(768, channels_7x7=160)
        self.Mixed_6e = MixedC(768, channels_7x7=192)
        self.Mixed_7a = ReductionB(768)
        self.Mixed_7b = MixedE(1280, pool="avg")
        self.Mixed_7c = MixedE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)  # the graph's 1008-way classifier; unused for features, kept to load the files
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # keeps activations O(1) through the random network, so tests see non-degenerate features
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` in [0, 1] to ``(B, 3, 299, 299)`` network input in [-1, 1] (see the class docstring)."""
        if self.input_definition == "pytorch-fid":
            x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            x = 2 * x - 1
        else:
            x = torch.floor(images.clamp(0, 1) * 255 + 0.5)
            x = resize_bilinear_tf1(x, (INPUT_SIZE, INPUT_SIZE))
            x = (x - 128) / 128
        # the resize and intensity map act per channel, so repeating last gives the same values at a third the cost
        return x.expand(-1, 3, -1, -1)

    def extract(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, 2048)`` pool3 features of ``(B, 3, h, w)`` preprocessed inputs (299×299 for the published values)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(inputs)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        for block in (self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1008)`` classifier logits (the Inception Score's input) of ``(B, 1, H, W)`` images in [0, 1]."""
        return self.fc(self(images))
