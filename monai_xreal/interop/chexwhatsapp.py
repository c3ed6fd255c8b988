# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""cheXwhatsApp's lung segmenter (a VGG-11 U-Net trained on real chest X-rays, MIT licence): its weights read out of
the published pickle without running it, and a MONAI bundle made of them (the real lung judge)."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

from monai_xreal.errors import XRealInputError
from monai_xreal.interop.legacy_pickle import read_pickled_module
from monai_xreal.io.hashing import sha256_file
from monai_xreal.io.packaged import packaged_file
from monai_xreal.io.writers import staged_folder
from monai_xreal.networks.lung_unet import VGG11UNet

__all__ = ["CHEXWHATSAPP_CLASSES", "read_chexwhatsapp", "write_lung_judge_bundle"]

# the only classes the published pickle may name: its two module classes and the torch layers inside them
CHEXWHATSAPP_CLASSES = ("lung_segmentation.PretrainedUNet", "lung_segmentation.Block",
                        "torch.nn.modules.conv.Conv2d", "torch.nn.modules.batchnorm.BatchNorm2d")  # fmt: skip
_TARGET = "monai_xreal.networks.VGG11UNet"
_LICENCE = """Copyright 2024 Sahil Lathiya (weights of cheXwhatsApp 0.1.5's lung_segmentation.pt)

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation the
rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit
persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of the
Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE
WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

The configs and documentation of this bundle were written by monai_xreal (Apache-2.0).
"""


def read_chexwhatsapp(path: str | Path | None = None) -> tuple[dict, VGG11UNet]:
    """The network definition (bundle config form) and the network with cheXwhatsApp's weights, in eval mode.

    Args:
        path: ``lung_segmentation.pt``; ``None`` finds it in the installed ``cheXwhatsApp`` package (which is not
            imported: it imports torchvision and OpenCV).

    Raises:
        XRealInputError: the file is missing, names anything beyond :data:`CHEXWHATSAPP_CLASSES`, or its tensors do
            not fit the network.
    """
    path = packaged_file("chexwhatsapp_lungs") if path is None else Path(path)
    module = read_pickled_module(path, CHEXWHATSAPP_CLASSES)
    settings = {k: module.attributes.get(k) for k in ("in_channels", "out_channels", "batch_norm", "upscale_mode")}
    if any(v is None for v in settings.values()):
        raise XRealInputError("input", f"{path} is not cheXwhatsApp's lung U-Net (settings found: {module.attributes})")
    network = VGG11UNet(**settings)
    try:
        network.load_state_dict(module.state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise XRealInputError("input", f"{path} does not fit the VGG-11 U-Net: {first}") from err
    return {"_target_": _TARGET, **settings}, network.eval()


def _common_config(definition: dict) -> dict:
    """What every config of the judge shares: the network, its input size and the device."""
    return {
        "imports": [
            "$import os",
            "$import torch",
            "$import monai",
            "$import monai_xreal",
            "$import monai_xreal.bundle",
        ],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "spatial_size": "@_meta_#network_data_format#inputs#image#spatial_shape",
        "network_def": definition,
        "network": "$@network_def.to(@device)",
    }


def _inference_config() -> dict:
    """Segment the images of a MONAI datalist (``datalist``: a JSON file, ``datalist_key``: its list), layered on
    :func:`_common_config` as in every bundle of the project."""
    return {
        "output_dir": "$@bundle_root + '/output'",
        "dataset_dir": "$@bundle_root + '/sample_data'",
        "datalist": "$@dataset_dir + '/datalist.json'",
        "datalist_key": "validation",
        "preprocessing": {"_target_": "monai.transforms.Compose", "transforms": [
            {"_target_": "monai.transforms.LoadImaged", "keys": "image", "image_only": True,
             "ensure_channel_first": True},
            {"_target_": "monai_xreal.transforms.NormalizeCXRIntensityd", "keys": "image"},
            {"_target_": "monai.transforms.Resized", "keys": "image", "spatial_size": "@spatial_size",
             "mode": "bilinear", "anti_aliasing": True},
            {"_target_": "monai.transforms.Transposed", "keys": "image", "indices": [0, 2, 1]},
            {"_target_": "monai.transforms.ShiftIntensityd", "keys": "image", "offset": -0.5},
            {"_target_": "monai.transforms.EnsureTyped", "keys": "image", "dtype": "$torch.float32"}]},
        "dataset": {"_target_": "monai.data.Dataset",
                    "data": "$monai.data.load_decathlon_datalist(@datalist, False, @datalist_key)",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "monai.data.DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "monai.inferers.SimpleInferer"},
        "postprocessing": {"_target_": "monai.transforms.Compose", "transforms": [
            {"_target_": "monai.transforms.AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "monai.transforms.Transposed", "keys": "pred", "indices": [0, 2, 1]},
            {"_target_": "monai.transforms.SaveImaged", "keys": "pred", "output_dir": "@output_dir",
             "output_postfix": "lungs", "output_ext": ".png", "output_dtype": "$torch.uint8", "resample": False,
             "separate_folder": False, "print_log": False}]},
        "evaluator": {"_target_": "monai.engines.SupervisedEvaluator", "device": "@device",
                      "val_data_loader": "@dataloader", "network": "@network", "inferer": "@inferer",
                      "postprocessing": "@postprocessing", "amp": False},
        "initialize": ["$monai.utils.set_determinism(seed=0)", "$os.makedirs(@output_dir, exist_ok=True)",
                       "$monai_xreal.bundle.load_weights(@network, monai_xreal.bundle.weight_file(@bundle_root, 'unet'))"],
        "run": ["$@evaluator.run()"],
        "finalize": [],
    }  # fmt: skip


def _sample_data(target: Path) -> None:
    """Two simulated radiographs (the classifier bundle's samples) and their datalist, so the inference workflow
    runs with its defaults."""
    from monai_xreal.bundle import default_bundle_path

    source = default_bundle_path("cxr_classifier") / "sample_data"
    target.mkdir(parents=True)
    shutil.copy2(source / "datalist.json", target / "datalist.json")
    for item in json.loads((source / "datalist.json").read_text())["validation"]:
        shutil.copy2(source / item["image"], target / item["image"])


def _metadata(source: Path, weights: Path) -> dict:
    import monai
    import torch

    from monai_xreal.version import __version__

    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
        "meta_schema_20240725.json",
        "version": "1.0.0",
        "changelog": {"1.0.0": f"converted by monai-xreal {__version__} on {date.today().isoformat()}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": __import__("numpy").__version__,
        "required_packages_version": {"monai-xreal": __version__},
        "name": "CXR real lung judge",
        "task": "Lung segmentation of frontal chest X-rays",
        "description": "cheXwhatsApp's lung U-Net (VGG-11 encoder, trained on real chest X-rays), converted to a MONAI "
        "bundle: monai_xreal's independent judge of lung anatomy and reader of real radiographs' lungs.",
        "authors": "Sahil Lathiya (weights); monai_xreal contributors (conversion)",
        "copyright": "Copyright 2024 Sahil Lathiya (MIT)",
        "data_source": "real chest radiographs (cheXwhatsApp; see its package)",
        "intended_use": "Research: judging lung anatomy of generated chest X-rays. Not for clinical use.",
        "source_files": {source.name: sha256_file(source)},
        "model_sha256": {weights.name: sha256_file(weights)},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "xray", "num_channels": 1,
                                 "spatial_shape": [512, 512], "dtype": "float32", "value_range": [-0.5, 0.5],
                                 "is_patch_data": False, "channel_def": {"0": "image / 255 - 0.5, rows first"}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                                 "spatial_shape": [512, 512], "dtype": "float32", "value_range": [],
                                 "is_patch_data": False, "channel_def": {"0": "background", "1": "lungs"}}},
        },
    }  # fmt: skip


def write_lung_judge_bundle(
    output_bundle: str | Path, path: str | Path | None = None, safetensors: bool = True
) -> Path:
    """Write the real lung judge as a MONAI bundle (configs, metadata with the source's and the weights' SHA-256,
    weights, docs, licence), built in a hidden sibling folder and renamed into place.

    Raises:
        XRealInputError: ``output_bundle`` exists and is not empty, or the source cannot be read safely.
    """
    from monai_xreal.bundle import save_weights

    out = Path(output_bundle)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise XRealInputError("output_bundle", f"{out} exists and is not empty")
    source = packaged_file("chexwhatsapp_lungs") if path is None else Path(path)
    definition, network = read_chexwhatsapp(source)
    with staged_folder(out) as staging:
        weights = save_weights(network, staging / "models" / ("model.safetensors" if safetensors else "model.pt"))
        (staging / "configs").mkdir()
        (staging / "configs" / "common.json").write_text(json.dumps(_common_config(definition), indent=2))
        (staging / "configs" / "inference.json").write_text(json.dumps(_inference_config(), indent=2))
        (staging / "configs" / "metadata.json").write_text(json.dumps(_metadata(source, weights), indent=2))
        (staging / "LICENSE").write_text(_LICENCE)
        _sample_data(staging / "sample_data")
        (staging / "docs").mkdir()
        (staging / "docs" / "README.md").write_text(_README.format(source=source.name, sha=sha256_file(source)))
    return out


_README = """# cxr_lung_judge: a lung segmenter trained on real chest X-rays

cheXwhatsApp's lung U-Net (VGG-11 encoder, 23.0M parameters, 1 grey channel at 512 x 512, 2 classes), trained by its
author on real adult PA, portable AP and paediatric radiographs, converted by `monai-xreal convert --from chexwhatsapp`
from `{source}` (SHA-256 `{sha}`). The published file is a whole pickled module in PyTorch's legacy format; it was read
with monai_xreal's allow-listed unpickler (its two classes and two torch layers, nothing else), never executed.

monai_xreal uses it as an independent judge of lung anatomy (`monai-xreal adherence` / `evaluate` report its Dice
beside the project's own segmenter) and to read a real radiograph's lungs (`monai-xreal anatomy`).

## Inference

```bash
cd cxr_lung_judge
python -m monai.bundle run --config_file "['configs/common.json','configs/inference.json']" \\
    --meta_file configs/metadata.json --datalist DATALIST.json --output_dir OUT
```

`datalist` is a MONAI datalist file (`{{"validation": [{{"image": "a.png"}}, ...]}}`, paths relative to it; the
list is `datalist_key`); with the defaults it segments the two simulated radiographs in `sample_data/`.

Input: a frontal chest X-ray (any size, resized to 512 x 512; intensities through
`monai_xreal.transforms.NormalizeCXRIntensityd`, then `- 0.5`); output `<name>_lungs.png`, 1 on both lungs, 512 x 512.
`monai_xreal.metrics.RealLungJudge.load("cxr_lung_judge")` gives it in Python (resized back to the input and split
into the patient's right and left lung).

## Licence

MIT (see `LICENSE`), as the original package.
"""
