# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""FID feature extractors: shapes, the published weight files' layout, local-only loading and the input definitions."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from monai_xreal.errors import XRealInputError
from monai_xreal.metrics.extractors import (
    FEATURE_EXTRACTORS,
    PYTORCH_FID_WEIGHTS_FILE,
    TORCH_FIDELITY_WEIGHTS_FILE,
    XRV_OP_THRESHS,
    XRV_PATHOLOGIES,
    XRV_WEIGHTS_FILE,
    FeatureExtractor,
    FIDInceptionV3,
    XRVDenseNet121,
    apply_op_threshs,
    load_feature_extractor,
    monai_to_xrv_key,
    resize_bilinear_tf1,
    xrv_to_monai_key,
)

PUBLISHED_FILES = {
    "inception-pytorch-fid": PYTORCH_FID_WEIGHTS_FILE,
    "inception-torch-fidelity": TORCH_FIDELITY_WEIGHTS_FILE,
    "xrv-densenet121-res224-all": XRV_WEIGHTS_FILE,
}
DIMS = {"inception-pytorch-fid": 2048, "inception-torch-fidelity": 2048, "xrv-densenet121-res224-all": 1024}


def randomise_batch_norms(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics, so a weight round trip that dropped them would show in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) * 0.4 + 0.8)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    return randomise_batch_norms(load_feature_extractor("inception-pytorch-fid", None), seed=1)


@pytest.fixture(scope="module")
def xrv() -> XRVDenseNet121:
    return randomise_batch_norms(load_feature_extractor("xrv-densenet121-res224-all", None), seed=2)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", sorted(FEATURE_EXTRACTORS))
def test_shapes_names_and_random_init_warning(name: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        extractor = load_feature_extractor(name, None)
    assert "randomly initialised" in caplog.text
    assert isinstance(extractor, FeatureExtractor) and not extractor.training
    assert extractor.name == name and extractor.feature_dim == DIMS[name]
    assert not any(p.requires_grad for p in extractor.parameters())
    for shape in [(2, 1, 64, 64), (1, 1, 48, 80)]:
        features = extractor(torch.rand(shape))
        assert features.shape == (shape[0], DIMS[name]) and features.dtype == torch.float32
        assert torch.isfinite(features).all() and features.std() > 0
    for wrong in (torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32, dtype=torch.uint8)):
        with pytest.raises(XRealInputError, match=r"\(B, 1, H, W\) float images"):
            extractor(wrong)


def test_inception_state_dict_has_the_published_layout(inception: FIDInceptionV3) -> None:
    state = inception.published_state_dict()
    assert state.keys() == inception.state_dict().keys()  # the files use the module's own names
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch1x1.bn.running_mean": (64,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    # torchvision's Inception3(num_classes=1008, aux_logits=False) as pytorch-fid builds it: 94 conv+BN units
    assert sum(p.numel() for p in inception.parameters()) == 23_850_960
    assert sum(k.endswith(".conv.weight") for k in state) == 94
    assert all(m.eps == 1e-3 for m in inception.modules() if isinstance(m, nn.BatchNorm2d))


def test_xrv_state_dict_has_the_published_layout(xrv: XRVDenseNet121) -> None:
    state = xrv.published_state_dict()
    expected = {
        "features.conv0.weight": (64, 1, 7, 7),
        "features.norm0.running_mean": (64,),
        "features.denseblock1.denselayer1.norm1.weight": (64,),
        "features.denseblock1.denselayer1.conv1.weight": (128, 64, 1, 1),
        "features.denseblock4.denselayer16.conv2.weight": (32, 128, 3, 3),
        "features.transition3.conv.weight": (512, 1024, 1, 1),
        "features.norm5.running_var": (1024,),
        "classifier.weight": (18, 1024),
        "classifier.bias": (18,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(".layers." in k or k.startswith(("densenet.", "class_layers")) for k in state)
    assert "op_threshs" not in state  # the published file holds no thresholds
    assert sum(p.numel() for p in xrv.parameters()) == 6_966_034  # = torchxrayvision's DenseNet(weights=None)
    assert all(xrv_to_monai_key(monai_to_xrv_key(k)) == k for k in xrv.densenet.state_dict())
    # older torchvision-style dumps spell the dense-layer modules "norm.1"
    legacy = xrv_to_monai_key("features.denseblock2.denselayer3.norm.1.weight")
    assert legacy == "features.denseblock2.denselayer3.layers.norm1.weight"


def test_inception_weights_round_trip(inception: FIDInceptionV3, images: torch.Tensor, tmp_path: Path) -> None:
    # as an older file: without BN num_batches_tracked counters
    state = {k: v for k, v in inception.published_state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / PYTORCH_FID_WEIGHTS_FILE)
    loaded = load_feature_extractor("inception-pytorch-fid", tmp_path)  # a folder: finds the published name
    assert torch.equal(loaded(images), inception(images))
    fidelity = load_feature_extractor("inception-torch-fidelity", tmp_path / PYTORCH_FID_WEIGHTS_FILE)
    inputs = fidelity.preprocess(images)
    assert torch.equal(fidelity.extract(inputs), inception.extract(inputs))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_xrv_weights_round_trip(xrv: XRVDenseNet121, images: torch.Tensor, tmp_path: Path, suffix: str) -> None:
    state = {k: v.contiguous() for k, v in xrv.published_state_dict().items()}
    if suffix == ".pt":
        torch.save(state, tmp_path / "converted.pt")
        source = tmp_path / "converted.pt"
    else:  # a folder holding <name>.safetensors
        safetensors.torch.save_file(state, str(tmp_path / f"{xrv.name}.safetensors"))
        source = tmp_path
    loaded = load_feature_extractor("xrv-densenet121-res224-all", source)
    assert torch.equal(loaded(images), xrv(images))
    assert torch.equal(loaded.logits(images), xrv.logits(images))
    assert torch.equal(loaded.pathology_probabilities(images), xrv.pathology_probabilities(images))


def test_xrv_state_dict_with_op_threshs_sets_the_calibration(xrv: XRVDenseNet121, tmp_path: Path) -> None:
    # what torch.save(xrv.models.DenseNet(weights="densenet121-res224-all").state_dict()) writes
    thresholds = torch.linspace(0.1, 0.9, len(XRV_PATHOLOGIES))
    torch.save({**xrv.published_state_dict(), "op_threshs": thresholds}, tmp_path / "converted.pt")
    loaded = load_feature_extractor("xrv-densenet121-res224-all", tmp_path / "converted.pt")
    assert torch.equal(loaded.op_threshs, thresholds)
    assert torch.equal(xrv.op_threshs, torch.tensor(XRV_OP_THRESHS))  # the built-in res224-all values by default


@pytest.mark.parametrize("name", sorted(FEATURE_EXTRACTORS))
def test_missing_weight_file_names_the_file_to_provide(name: str, tmp_path: Path) -> None:
    with pytest.raises(XRealInputError) as info:
        load_feature_extractor(name, tmp_path / "absent.pth")
    assert info.value.argument == "weights"
    assert PUBLISHED_FILES[name] in info.value.message and "https://github.com/" in info.value.message
    if name.startswith("xrv"):
        assert "torch.save(m.state_dict()" in info.value.message  # the conversion one-liner
    with pytest.raises(XRealInputError, match=f"holds none of.*{name}.safetensors.*{PUBLISHED_FILES[name]}"):
        load_feature_extractor(name, tmp_path)


def test_refused_weight_files(xrv: XRVDenseNet121, tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "whole_model.pt")  # a pickled module, like xrv's published file
    with pytest.raises(XRealInputError, match="not a plain state dict.*torch.save") as info:
        load_feature_extractor("xrv-densenet121-res224-all", tmp_path / "whole_model.pt")
    assert info.value.argument == "weights"
    state = xrv.published_state_dict()
    del state["classifier.weight"]
    state["features.conv0.weight"] = torch.zeros(64, 3, 7, 7)
    torch.save({**state, "extra.bias": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(XRealInputError, match=r"missing \(e.g. classifier.weight\).*unexpected.*extra.bias.*shape"):
        load_feature_extractor("xrv-densenet121-res224-all", tmp_path / "wrong.pt")
    with pytest.raises(XRealInputError) as info:
        load_feature_extractor("inception-v4", None)
    assert info.value.argument == "name"


@pytest.mark.parametrize("fixture", ["inception", "xrv"])
def test_deterministic_and_batch_independent(fixture: str, images: torch.Tensor, request) -> None:
    extractor = request.getfixturevalue(fixture)
    features = extractor(images)
    assert torch.equal(features, extractor(images))
    assert torch.allclose(extractor(images[1:]), features[1:], rtol=1e-4, atol=1e-4 * features.abs().max().item())


def test_pytorch_fid_input_definition(inception: FIDInceptionV3) -> None:
    x = torch.cat([torch.zeros(1, 1, 40, 30), torch.ones(1, 1, 40, 30), torch.full((1, 1, 40, 30), 0.25)])
    pre = inception.preprocess(x)
    assert pre.shape == (3, 3, 299, 299)
    assert torch.equal(pre[:, 0], pre[:, 2])  # grayscale repeated to RGB
    assert torch.allclose(pre[0], torch.tensor(-1.0)) and torch.allclose(pre[1], torch.tensor(1.0))
    assert torch.allclose(pre[2], torch.tensor(-0.5))
    # half-pixel-centred bilinear (align_corners=False): the 180° rotation of a resized image is the resized rotation
    square = torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]).view(1, 1, 2, 2)
    resized = inception.preprocess(square)[0, 0]
    assert torch.allclose(resized + resized.flip(0, 1), torch.tensor(0.0), atol=1e-6)
    assert resized[0, 0] == -1 and resized[-1, -1] == 1  # corners clamp to the corner pixels


def test_torch_fidelity_input_definition() -> None:
    extractor = FIDInceptionV3("torch-fidelity")
    pre = extractor.preprocess(torch.tensor([0.0, 1.0, 0.5, 0.3]).view(4, 1, 1, 1).expand(4, 1, 8, 8))
    assert pre.shape == (4, 3, 299, 299)
    # uint8 quantisation floor(255 x + 0.5), then (x - 128) / 128
    for i, value in enumerate([-1.0, 127 / 128, 0.0, (math.floor(0.3 * 255 + 0.5) - 128) / 128]):
        assert torch.equal(pre[i], torch.full_like(pre[i], value))
    # TensorFlow 1 bilinear: output i samples input i * in / out, anchored at the corner and clamped
    square = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    expected = torch.tensor([[0, 0.5, 1, 1], [1, 1.5, 2, 2], [2, 2.5, 3, 3], [2, 2.5, 3, 3]])
    assert torch.equal(resize_bilinear_tf1(square, (4, 4))[0, 0], expected)
    grid = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(resize_bilinear_tf1(grid, (2, 2))[0, 0], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))


def test_xrv_input_definition(xrv: XRVDenseNet121) -> None:
    pre = xrv.preprocess(torch.cat([torch.zeros(1, 1, 224, 224), torch.ones(1, 1, 224, 224)]))
    assert pre.shape == (2, 1, 224, 224)
    assert (pre[0] == -1024).all() and (pre[1] == 1024).all()
    # centre crop of the long side: the bands outside the central square never reach the network
    tall = torch.zeros(1, 1, 300, 200)
    tall[:, :, :50], tall[:, :, 250:] = 1, 1
    wide = torch.zeros(1, 1, 100, 161)
    wide[:, :, :, :30], wide[:, :, :, 130:] = 1, 1
    for image in (tall, wide):
        assert torch.equal(xrv.preprocess(image), torch.full((1, 1, 224, 224), -1024.0))


def test_pathology_probabilities_and_calibration(xrv: XRVDenseNet121, images: torch.Tensor) -> None:
    assert len(XRV_PATHOLOGIES) == len(XRV_OP_THRESHS) == 18 and xrv.pathologies == XRV_PATHOLOGIES
    assert XRV_PATHOLOGIES[0] == "Atelectasis" and XRV_PATHOLOGIES[-1] == "Enlarged Cardiomediastinum"
    probabilities = xrv.pathology_probabilities(images)
    assert probabilities.shape == (2, 18) and probabilities.min() >= 0 and probabilities.max() <= 1
    assert torch.equal(xrv.pathology_probabilities(images, calibrated=False), torch.sigmoid(xrv.logits(images)))
    thresholds = torch.tensor([0.2, 0.2, 0.2, 0.2, float("nan")])
    p = torch.tensor([[0.2, 0.0, 1.0, 0.1, 0.9]], requires_grad=True)
    calibrated = apply_op_threshs(p, thresholds)
    assert torch.allclose(calibrated, torch.tensor([[0.5, 0.0, 1.0, 0.25, 0.5]]))  # threshold -> 0.5, NaN -> 0.5
    calibrated.sum().backward()
    assert torch.isfinite(p.grad).all()
