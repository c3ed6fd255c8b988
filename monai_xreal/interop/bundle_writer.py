# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Write a :class:`~monai_xreal.interop.convert.Conversion` as a MONAI bundle that ``XRealPipeline.from_bundle`` and
``python -m monai.bundle run`` use like the embedded ``cxr_xreal`` bundle.

The configs start from ``cxr_xreal``'s (one source for the sampling, data and evaluator ids) and keep its layout:
``configs/common.json`` with the converted networks, text encoder and scheduler, ``configs/inference.json`` layered
on it with the model's sampling constants, and the latent scale factor in ``models/scale_factor.json``. The bundle is built in a hidden sibling folder and renamed
into place at the end, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

from monai_xreal.bundle import (
    COMMON_CONFIG,
    NETWORK_IDS,
    SCALE_FACTOR_FILE,
    WEIGHT_STEMS,
    default_bundle_path,
    save_weights,
    write_scale_factor,
)
from monai_xreal.errors import XRealInputError
from monai_xreal.interop.convert import Conversion
from monai_xreal.io.hashing import sha256_file as sha256
from monai_xreal.io.writers import staged_folder
from monai_xreal.version import __version__

__all__ = ["write_bundle"]

_TEXT_ENCODER_ID = "text_encoder"


# the training configs a converted bundle gets, layered on its common.json as in cxr_xreal (the autoencoder is kept:
# retraining it would change the latent space the UNet was trained in)
TRAIN_CONFIGS = ("train_diffusion.json", "finetune.json", "train_anatomy_controller.json", "train_controlnet.json",
                 "train_report_diffusion.json", "noise_filter.json", "multi_gpu_train.json")  # fmt: skip
# components a converted bundle may lack: defined in common.json so they can be trained, in the pipeline once their
# weights are in models/
TRAINABLE_COMPONENTS = ("anatomy_controller", "controlnet")


def controlnet_definition(unet: dict, autoencoder: dict) -> dict:
    """A MONAI ``ControlNet`` definition mirroring a UNet definition (so ``controlnet_from_unet`` copies its
    blocks), whose condition embedding downsamples the image-resolution anatomy as often as the autoencoder does."""
    from monai.networks.nets import ControlNet

    from monai_xreal.interop.convert import with_fast_attention

    accepted = set(inspect.signature(ControlNet.__init__).parameters)
    definition = {k: v for k, v in unet.items() if k in accepted}
    levels = len(autoencoder["channels"])
    embedding = [16, 32, 96, 256][:levels] + [256] * max(0, levels - 4)
    definition.update(
        conditioning_embedding_in_channels="$@max_label + 1", conditioning_embedding_num_channels=embedding
    )
    return with_fast_attention({"_target_": "monai.networks.nets.ControlNet", **definition})


def _common_config(conversion: Conversion) -> dict:
    """``cxr_xreal``'s ``common.json`` with the converted networks, text encoder, scheduler and image range (the scale
    factor is read from ``models/scale_factor.json``, as in every bundle). A component the source lacks is defined
    so that it can be trained over the converted model: the anatomy controller as ``cxr_xreal``'s (a grey
    mask-to-image autoencoder in [0, 1], independent of the backbone's latent space), the ControlNet mirroring the
    converted UNet."""
    shipped = json.loads((default_bundle_path() / COMMON_CONFIG).read_text())
    config = dict(shipped)
    for component, config_id in NETWORK_IDS.items():
        config[config_id] = conversion.networks[component][0] if component in conversion.networks else None
    if "anatomy_controller" not in conversion.networks:
        config["anatomy_controller_def"] = shipped["anatomy_controller_def"]
    if "controlnet" not in conversion.networks:
        config["controlnet_def"] = controlnet_definition(config["diffusion_unet_def"], config["autoencoder_def"])
    config["report_adapter_def"] = shipped["report_adapter_def"]
    config["network_def"] = "@diffusion_unet_def"
    config["latent_channels"] = conversion.networks["unet"][0]["in_channels"]
    config["image_range"] = list(conversion.image_range)
    config[_TEXT_ENCODER_ID] = conversion.text_encoder or conversion.networks["text_encoder"][0]
    config["noise_scheduler"] = conversion.scheduler
    return config


def _inference_config(conversion: Conversion) -> dict:
    """``cxr_xreal``'s ``inference.json`` (layered on :func:`_common_config`) with the converted model's constants."""
    config = json.loads((default_bundle_path() / "configs" / "inference.json").read_text())
    config["families"] = conversion.families
    config["pipeline"].update(families="@families")
    for component in TRAINABLE_COMPONENTS:  # a controller trained later joins the pipeline when its weights do
        config["pipeline"][component] = (f"$@{NETWORK_IDS[component]} if monai_xreal.bundle.has_weights("
                                         f"@bundle_root, '{component}') else None")  # fmt: skip
    config["pipeline"]["sampling_defaults"]["anatomy_step_fraction"] = 0.5  # XReal's published value
    config["num_inference_steps"], config["anatomy_step_fraction"] = 100, 0.5
    config["pathology_feather"] = 0.0  # a converted model samples as its release did; ``--pathology-feather`` opts in
    return config


def _metadata(conversion: Conversion, name: str) -> dict:
    meta = json.loads((default_bundle_path() / "configs" / "metadata.json").read_text())
    size = list(conversion.spatial_shape)
    factor = 2 ** (len(conversion.networks["autoencoder"][0]["channels"]) - 1)
    latent = [s // factor for s in size]
    channels = conversion.networks["unet"][0]["in_channels"]
    formats = meta["network_data_format"]
    for part in (formats["inputs"]["image"], formats["outputs"]["pred"]):
        part.update(num_channels=channels, spatial_shape=latent)
        part["channel_def"] = {str(i): f"latent {i}" for i in range(channels)}
    for key in ("anatomy", "pathology"):
        formats["inputs"][key]["spatial_shape"] = size
    meta["generated_data_format"]["spatial_shape"] = size
    meta.update(
        version="0.1.0", changelog={"0.1.0": f"converted from {conversion.source_format} weights by monai-xreal"},
        name=name, required_packages_version={"monai-xreal": __version__},
        task="Anatomy- and pathology-controlled chest X-ray generation on converted weights",
        description=f"XReal's controllable sampling over a latent diffusion model converted from the "
        f"{conversion.source_format} format. " + " ".join(conversion.notes),
        intended_use="Research. The converted model's own license and intended use apply.",
        data_source="see the source model's documentation",
    )  # fmt: skip
    return meta


def _readme(conversion: Conversion, name: str, meta: dict) -> str:
    rows = "\n".join(f"| `{k}` | `{v['sha256']}` |" for k, v in meta["conversion"]["inputs"].items())
    components = ", ".join(sorted(conversion.networks) + (["text encoder folder"] if conversion.text_encoder else []))
    anatomy = (
        "The anatomy controller came with the model (same family), so anatomy masks are followed."
        if "anatomy_controller" in conversion.networks
        else "This model has no anatomy controller: generation follows the pathology region and prompt only. "
        "Train one against this autoencoder (`configs/train_anatomy_controller.json` of `cxr_xreal`) to add it."
    )
    notes = "\n".join(f"- {line}" for line in conversion.notes)
    return f"""# {name}

Converted by `monai-xreal convert --from {conversion.source_format}` (monai-xreal {__version__}, {date.today()}).
Networks: {components}. Scale factor {conversion.scale_factor}, images in {list(conversion.image_range)} for the
autoencoder, {conversion.spatial_shape[0]}x{conversion.spatial_shape[1]} pixels.

{anatomy}

{notes}

## Use

```python
from monai_xreal import XRealPipeline
pipeline = XRealPipeline.from_bundle("{name}")
```
or `python -m monai.bundle run --config_file "['configs/common.json','configs/inference.json']" --bundle_root .`
over `sample_data/`. The networks, text encoder and scheduler are in `configs/common.json`, the latent scale factor
in `models/scale_factor.json`.

## Inputs (SHA-256)

| file | sha256 |
|---|---|
{rows}

Output files and their SHA-256 are in `configs/metadata.json` under `conversion.outputs`.
"""


def _sample_data(target: Path, has_anatomy: bool) -> None:
    source = default_bundle_path() / "sample_data"
    target.mkdir(parents=True)
    for name in ("anatomy.png", "pathology.png"):
        shutil.copy2(source / name, target / name)
    conditions = [{"id": "sample_effusion", "pathology": "pathology.png", "prompt": "Pleural Effusion"}]
    if has_anatomy:
        conditions = [{**conditions[0], "anatomy": "anatomy.png"}, {"id": "sample_anatomy_only", "anatomy":
                      "anatomy.png", "prompt": ""}]  # fmt: skip
    (target / "conditions.json").write_text(json.dumps({"conditions": conditions}, indent=2) + "\n")


def write_bundle(
    conversion: Conversion,
    output: str | Path,
    safetensors: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``conversion`` as a bundle at ``output`` (which must not exist or be empty).

    Args:
        conversion: a reader's result.
        output: the bundle folder to create.
        safetensors: also write ``models/*.safetensors`` copies of the ``.pt`` weights.
        progress: called with a short description before each step.

    Returns:
        ``output``.
    """
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise XRealInputError("output_bundle", f"{output} exists and is not empty")
    step = progress or (lambda _: None)
    with staged_folder(output) as staging:
        step("weights")
        for component, (_, module) in conversion.networks.items():
            for suffix in (".pt", ".safetensors") if safetensors else (".pt",):
                save_weights(module, staging / "models" / f"{WEIGHT_STEMS[component]}{suffix}")
        for name, folder in conversion.copied_folders.items():
            shutil.copytree(folder, staging / "models" / name)
        step("configs")
        _sample_data(staging / "sample_data", "anatomy_controller" in conversion.networks)
        write_scale_factor(staging / SCALE_FACTOR_FILE, conversion.scale_factor)
        (staging / "configs").mkdir()
        (staging / COMMON_CONFIG).write_text(json.dumps(_common_config(conversion), indent=4) + "\n")
        config = _inference_config(conversion)
        (staging / "configs" / "inference.json").write_text(json.dumps(config, indent=4) + "\n")
        for name in (*TRAIN_CONFIGS, "logging.conf"):
            shutil.copy2(default_bundle_path() / "configs" / name, staging / "configs" / name)
        step("checksums")
        meta = _metadata(conversion, output.name)
        meta["conversion"] = {
            "source_format": conversion.source_format,
            "converted_with": f"monai-xreal {__version__}",
            "inputs": {str(p): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in conversion.inputs},
        }
        (staging / "docs").mkdir()
        (staging / "docs" / "README.md").write_text(_readme(conversion, output.name, meta))
        meta["conversion"]["outputs"] = {
            p.relative_to(staging).as_posix(): sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()
        }  # every file but metadata.json itself, which is written last
        (staging / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
    return output
