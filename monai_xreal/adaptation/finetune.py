# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Adapt a pretrained generator bundle to your own radiographs: its UNet fine-tuned through its own train configs
(``common.json`` + ``train_diffusion.json`` + ``finetune.json``), written out as a new bundle.

The request is checked before any training (bundle, datalist, images), so a bad one fails in a line; training runs
in ``work_dir`` and resumes there from its last checkpoint; the new bundle is built in a hidden folder and renamed
into place at the end, so nothing half-written is left.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from monai_xreal.errors import XRealInputError, XRealInputWarning

__all__ = ["FINETUNE_CONFIGS", "FinetuneRequest", "check_finetune_request", "finetune_bundle"]

FINETUNE_CONFIGS = ("configs/train_diffusion.json", "configs/finetune.json")
IMAGES_CHECKED = 8  # the first images of the datalist read before training (a full read would take as long as an epoch)
# ids the request itself decides (checked, recorded): not overridable
RESERVED_IDS = ("datalist", "trainable", "output_dir", "bundle_root")
# what a work folder's checkpoints and latent cache were made from: a rerun must match to resume there
FINGERPRINT_IDS = ("lora_rank", "lora_alpha", "train_text_encoder", "demographics_in_prompt", "spatial_size")
# weights trained over the source UNet, kept as they were (recorded, so a user knows to retrain them)
OVER_THE_UNET = ("model_controlnet", "model_report_adapter")


@dataclass(frozen=True)
class FinetuneRequest:
    """A checked fine-tuning request.

    Attributes:
        bundle: the source bundle.
        datalist: the MONAI datalist (its ``training`` list: ``image``, ``labels``, optional ``demographics``).
        num_training: its number of training items.
        spatial_size: the bundle's image grid.
        overrides: config ids the workflow is run with.
    """

    bundle: Path
    datalist: Path
    num_training: int
    spatial_size: tuple[int, int]
    overrides: dict[str, Any]


def _training_items(datalist: Path) -> list[dict]:
    from monai_xreal.evaluation import read_real_datalist

    try:
        items = read_real_datalist(datalist, "training")
    except XRealInputError as err:
        raise XRealInputError("datalist", err.message) from None
    if not all(isinstance(item.get("labels"), Mapping) for item in items):
        raise XRealInputError("datalist", f"every training item of {datalist} needs 'labels' ({{finding: 0 or 1}}), "
                              "from which its prompt is built")  # fmt: skip
    return items


def _check_demographics(items: list[dict]) -> int:
    """Every item's demographics checked (no image is read); returns how many items have some."""
    from monai_xreal.text.demographics import Demographics

    found = 0
    for index, item in enumerate(items):
        found += Demographics.from_mapping(item.get("demographics"), f"training[{index}].demographics") is not None
    return found


def _check_images(items: list[dict], spatial_size: tuple[int, int], channels: int) -> None:
    """The first images: grey (one channel), not smaller than the model grid; a non-square one is warned about."""
    from monai.transforms import LoadImage

    load = LoadImage(image_only=True, ensure_channel_first=True)
    for item in items[:IMAGES_CHECKED]:
        try:
            image = load(item["image"])
        except Exception as err:  # MONAI's readers raise several types for a missing or unreadable file
            raise XRealInputError("datalist", f"cannot read {item['image']}: {str(err).splitlines()[0]}") from None
        if image.ndim != 3 or image.shape[0] != 1:
            raise XRealInputError("datalist", f"{item['image']} has {image.shape[0]} channels of shape "
                                  f"{tuple(image.shape[1:])}: the backbone takes grey 2D radiographs (its autoencoder "
                                  f"repeats them to its {channels} channels)")  # fmt: skip
        size = tuple(int(s) for s in image.shape[1:])
        if min(size) < min(spatial_size):
            raise XRealInputError("datalist", f"{item['image']} is {size[0]}x{size[1]}, smaller than the backbone's "
                                  f"{spatial_size[0]}x{spatial_size[1]} grid")  # fmt: skip
        if size[0] != size[1]:
            warnings.warn(f"{item['image']} is not square ({size[0]}x{size[1]}): it is resized to the model's "
                          f"{spatial_size[0]}x{spatial_size[1]} grid, changing its aspect", XRealInputWarning,
                          stacklevel=3)  # fmt: skip


def _left_behind(source: Path):
    """``copytree``'s ignore: the UNet weights being replaced, the source's outputs and hidden files."""
    replaced = {source / "models" / "model.pt", source / "models" / "model.safetensors"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        return {n for n in names if here / n in replaced or n.startswith(".") or (here == source and n == "output")}

    return ignore


def _claim_work_dir(work: Path, request: FinetuneRequest, sha256_file) -> None:
    """Tie the work folder to what its checkpoints and latent cache are made from (``request.json``); a rerun with
    another request (source weights, datalist, trainable, ...) is refused instead of resuming the wrong run."""
    from monai_xreal.bundle import weight_file
    from monai_xreal.io.atomic import write_text_atomically

    fingerprint = {
        "unet_sha256": sha256_file(weight_file(request.bundle, "unet")),
        "autoencoder_sha256": sha256_file(weight_file(request.bundle, "autoencoder")),
        "datalist_sha256": sha256_file(request.datalist),
        "trainable": request.overrides["trainable"],
        **{k: request.overrides.get(k) for k in FINGERPRINT_IDS},
    }  # fmt: skip
    path = work / "request.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        differing = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
        if differing:
            raise XRealInputError("work_dir", f"{work} holds a run of another request ({', '.join(differing)} "
                                  "differ); rerun the same request to resume it, or choose another --work-dir")  # fmt: skip
        return
    work.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(fingerprint, indent=2) + "\n")


def _install_text_encoder(trained: Path, staging: Path) -> str | None:
    """A text encoder trained with the UNet goes into the new bundle's ``models/text_encoder`` (replacing any copy
    there), and its ``common.json`` reads it from there (one folder: weights and tokenizer); returns the folder."""
    if not trained.is_dir():
        return None
    target = staging / "models" / "text_encoder"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(trained, target)
    common = staging / "configs" / "common.json"
    config = json.loads(common.read_text())
    config["text_encoder"]["path"] = "$@bundle_root + '/models/text_encoder'"
    config["text_encoder"].pop("tokenizer_path", None)
    common.write_text(json.dumps(config, indent=4) + "\n")
    return "models/text_encoder"


def check_finetune_request(
    bundle: str | Path, datalist: str | Path, trainable: str = "all", overrides: Mapping[str, Any] | None = None
) -> FinetuneRequest:
    """Check a fine-tuning request without training.

    Raises:
        XRealInputError: a bundle without the fine-tuning configs or UNet weights, a UNet that cannot be fine-tuned
            as asked (say, ``trainable="attention"`` on a text-free UNet), a datalist without training items or
            labels, colour images, images smaller than the model grid; with ``demographics_in_prompt``, an item's
            unknown demographic category or out-of-range age, or no item with demographics.
    """
    from pydoc import locate

    import torch

    from monai_xreal.bundle import has_weights, read_bundle_config
    from monai_xreal.engines.finetune import TRAINABLE, finetune_unet

    bundle, datalist = Path(bundle), Path(datalist)
    reserved = sorted(set(overrides or {}) & set(RESERVED_IDS))
    if reserved:
        raise XRealInputError("overrides", f"{reserved} are the request's own arguments, not overrides")
    if trainable not in TRAINABLE:
        raise XRealInputError("trainable", f"must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
    missing = [name for name in FINETUNE_CONFIGS if not (bundle / name).is_file()]
    if not (bundle / "configs" / "common.json").is_file() or missing:
        raise XRealInputError("bundle", f"{bundle} has no {' / '.join(missing) or 'configs/common.json'}: it cannot "
                              "be fine-tuned (bundles converted by monai-xreal 0.9 or later have them; convert again)")  # fmt: skip
    if not has_weights(bundle, "unet"):
        raise XRealInputError("bundle", f"{bundle}/models has no UNet weights (model.pt / model.safetensors) to start "
                              "from")  # fmt: skip
    parser = read_bundle_config(bundle, list(FINETUNE_CONFIGS))
    definition = parser.get("diffusion_unet_def")
    if not isinstance(definition, Mapping):
        raise XRealInputError("bundle", f"{bundle}'s configs define no diffusion_unet_def to fine-tune")
    parser.get_parsed_content("diffusion_unet_def#cross_attention_dim")  # may read the text encoder: outside meta
    with torch.device("meta"):  # the network's structure only: no weights allocated (an SD-size UNet is ~3 GB)
        finetune_unet(parser.get_parsed_content("diffusion_unet_def"), trainable)  # a UNet it cannot adapt says why
    if (overrides or {}).get("train_text_encoder"):
        encoder = locate(str(parser.get("text_encoder#_target_")))  # the class: nothing loaded
        if not hasattr(encoder, "tokenize"):
            raise XRealInputError("train_text_encoder", f"{getattr(encoder, '__name__', encoder)} cannot be "
                                  "fine-tuned: only a transformers encoder (HFTextEncoder) is")  # fmt: skip
    spatial_size = tuple(int(s) for s in parser.get_parsed_content("spatial_size"))
    channels = int(parser.get_parsed_content("autoencoder_def#in_channels"))
    items = _training_items(datalist)
    if (overrides or {}).get("demographics_in_prompt") and not _check_demographics(items):
        raise XRealInputError("datalist", f"no training item of {datalist} has demographics to put in the prompts")
    _check_images(items, spatial_size, channels)
    return FinetuneRequest(bundle, datalist, len(items), spatial_size,
                           {"datalist": str(datalist), "trainable": trainable, **(overrides or {})})  # fmt: skip


def finetune_bundle(
    bundle: str | Path,
    datalist: str | Path,
    output_bundle: str | Path,
    work_dir: str | Path | None = None,
    trainable: str = "all",
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Fine-tune ``bundle``'s UNet on ``datalist`` and write the result as ``output_bundle``.

    Args:
        bundle: a generator bundle with ``configs/finetune.json`` (``cxr_xreal``, or one ``monai-xreal convert``
            wrote): its scale factor, prediction type and image range are kept.
        datalist: a MONAI datalist whose ``training`` items have ``image`` and ``labels``.
        output_bundle: the new bundle (must not exist or be empty): the source's files with the fine-tuned
            ``models/model.pt`` and a ``fine_tuning`` record in its metadata.
        work_dir: checkpoints, logs and previews (default: ``<output_bundle>.work`` beside it); a rerun resumes from
            its last checkpoint.
        trainable: ``"all"``, ``"attention"`` or ``"lora"`` (:func:`monai_xreal.engines.finetune_unet`).
        overrides: other config ids (``epochs``, ``batch_size``, ``learning_rate``, ``device``, ...).

    Returns:
        ``output_bundle``.
    """
    from monai.bundle import ConfigWorkflow

    from monai_xreal.io.hashing import sha256_file
    from monai_xreal.io.writers import staged_folder

    out = Path(output_bundle)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise XRealInputError("output_bundle", f"{out} exists and is not empty")
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    if work.exists() and not work.is_dir():
        raise XRealInputError("work_dir", f"{work} is a file")
    request = check_finetune_request(bundle, datalist, trainable, overrides)
    source = request.bundle
    _claim_work_dir(work, request, sha256_file)
    workflow = ConfigWorkflow(
        config_file=[str(source / "configs" / "common.json"), *(str(source / name) for name in FINETUNE_CONFIGS)],
        meta_file=str(source / "configs" / "metadata.json"), workflow_type="train", bundle_root=str(source),
        output_dir=str(work), **request.overrides,
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    weights = work / workflow.parser.get_parsed_content("weights_filename")
    with staged_folder(out) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=_left_behind(source))
        shutil.copy2(weights, staging / "models" / "model.pt")
        trained_encoder = request.overrides.get("train_text_encoder")
        text_encoder = _install_text_encoder(work / "text_encoder", staging) if trained_encoder else None
        meta_path = staging / "configs" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["fine_tuning"] = {
            "source_bundle": str(source.resolve()), "source_version": meta.get("version"),
            "datalist": str(request.datalist.resolve()), "datalist_sha256": sha256_file(request.datalist),
            "num_training": request.num_training, "trainable": trainable,
            "overrides": {k: v for k, v in request.overrides.items() if k != "datalist"},
            "weights_sha256": sha256_file(weights), "date": date.today().isoformat(),
            "text_encoder": text_encoder,
            "kept_from_the_source_unet": sorted(p.name for p in (staging / "models").iterdir()
                                                if p.name.split(".")[0] in OVER_THE_UNET),
        }  # fmt: skip
        if "outputs" in meta.get("conversion", {}):  # the replaced files' checksums no longer hold
            for name in ("models/model.pt", "models/model.safetensors"):
                meta["conversion"]["outputs"].pop(name, None)
        meta_path.write_text(json.dumps(meta, indent=4) + "\n")
    return out
