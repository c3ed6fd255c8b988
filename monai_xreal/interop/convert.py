# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Read published CXR diffusion models (CompVis / XReal / Cheff, diffusers folders, the MONAI model-zoo bundle) into
MONAI networks: one reader per format, each returning a :class:`Conversion` that :func:`write_bundle` writes."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from pydoc import locate
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn

from monai_xreal.errors import XRealInputError
from monai_xreal.interop.compvis import (
    LDM_PREFIXES,
    ldm_autoencoder_to_monai,
    ldm_unet_to_monai,
    load_exactly,
    read_checkpoint,
    strip_prefix,
)
from monai_xreal.interop.compvis_arguments import (
    XREAL_ARCHITECTURE,
    compvis_autoencoder_arguments,
    compvis_text_encoder_arguments,
    compvis_unet_arguments,
    read_original_config,
)
from monai_xreal.interop.diffusers import (
    diffusers_autoencoder_arguments,
    diffusers_autoencoder_to_monai,
    diffusers_unet_arguments,
    diffusers_unet_to_monai,
)
from monai_xreal.interop.formats import FORMATS
from monai_xreal.interop.generative import load_generative_state
from monai_xreal.interop.schedulers import check_betas, compvis_scheduler_definition, diffusers_scheduler_definition
from monai_xreal.io.hashing import sha256_file as sha256

__all__ = [
    "FORMATS",
    "Conversion",
    "compvis_definitions",
    "convert",
    "from_compvis",
    "from_diffusers",
    "from_model_zoo",
    "with_fast_attention",
]

MODEL_ZOO_SCALE_FACTOR = 0.3  # cxr_image_synthesis_latent_diffusion_model's scripts/sampler.py decodes z / 0.3
_UNET = "monai_xreal.networks.CompVisDiffusionModelUNet"
_AUTOENCODER = "monai_xreal.networks.CompVisAutoencoderKL"
_COMPVIS_TARGETS = {"unet": _UNET, "autoencoder": _AUTOENCODER, "anatomy_controller": _AUTOENCODER,
                    "text_encoder": "monai_xreal.text.BERTEmbedder"}  # fmt: skip


@dataclass
class Conversion:
    """A converted model: network definitions (bundle config form) with their MONAI-named weights.

    Attributes:
        source_format: one of :data:`FORMATS`.
        inputs: the files read (hashed into the bundle's metadata).
        networks: pipeline component (``unet``, ``autoencoder``, ``anatomy_controller``, ``text_encoder``) to
            ``(definition, module with the weights loaded)``.
        text_encoder: the text encoder's definition when its weights are a folder rather than a state dict.
        copied_folders: folders copied under the bundle's ``models/`` (name to source), e.g. a CLIP text encoder.
        scheduler: the training schedule as a MONAI scheduler definition.
        scale_factor: latent scale factor.
        image_range: values the autoencoder's images span.
        spatial_shape: the model's image grid.
        families: model family of the autoencoder and anatomy controller.
        notes: lines for the bundle's README.
    """

    source_format: str
    inputs: list[Path]
    networks: dict[str, tuple[dict, nn.Module]]
    scheduler: dict
    scale_factor: float
    image_range: tuple[float, float]
    spatial_shape: tuple[int, int]
    families: dict[str, str]
    text_encoder: dict | None = None
    copied_folders: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _build(definition: Mapping[str, Any]) -> nn.Module:
    return ConfigParser({"network": dict(definition)}).get_parsed_content("network", instantiate=True)


def with_fast_attention(definition: Mapping[str, Any]) -> dict:
    """The network definition with PyTorch's fused attention (``use_flash_attention``, i.e.
    ``scaled_dot_product_attention``) switched on where its network class has the option.

    MONAI's networks default to a matmul-softmax attention that materialises every attention matrix; the fused
    kernel gives the same outputs (to float rounding) and is what diffusers runs, so a converted model without it
    samples ~2.7x slower than the original on the same weights (``docs/benchmarks.md``). Every converter's network
    goes through here.
    """
    definition = dict(definition)
    if _takes(locate(definition["_target_"]), "use_flash_attention"):
        definition["use_flash_attention"] = True
    return definition


def _takes(network: type | None, argument: str) -> bool:
    """Whether ``network(...)`` accepts ``argument``, following ``**kwargs`` up to the base classes."""
    for cls in getattr(network, "__mro__", ())[:-1]:
        parameters = inspect.signature(cls.__init__).parameters
        if argument in parameters:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False


def _network(arguments: Mapping[str, Any], target: str, state: Mapping[str, torch.Tensor], source: str) -> tuple:
    return _loaded(with_fast_attention({"_target_": target, **arguments}), state, source)


def _loaded(definition: dict, state: Mapping[str, torch.Tensor], source: str) -> tuple:
    """``(definition, network)`` with ``state`` loaded exactly (every key used, every parameter set)."""
    return definition, load_exactly(_build(definition), state, source)


def compvis_definitions(
    architecture: Mapping[str, Mapping[str, Any]] = XREAL_ARCHITECTURE,
) -> dict[str, dict[str, Any]]:
    """Bundle-config definitions of a CompVis model's networks, as :func:`from_compvis` writes them (fused
    attention on), from each component's arguments (``unet``, ``autoencoder``, ``anatomy_controller``,
    ``text_encoder``); the default is XReal's release. Built with ``ConfigParser``, they have random weights."""
    unknown = sorted(set(architecture) - set(_COMPVIS_TARGETS))
    if unknown:
        raise ValueError(f"unknown component(s) {unknown}; known: {sorted(_COMPVIS_TARGETS)}")
    return {name: with_fast_attention({"_target_": _COMPVIS_TARGETS[name], **arguments})
            for name, arguments in architecture.items()}  # fmt: skip


# -- CompVis / XReal / Cheff ------------------------------------------------------------------------------------------


def _ema_unet(state: Mapping[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """The UNet's EMA weights: LitEma stores ``model.diffusion_model.a.b`` as ``model_ema.diffusion_modelab``."""
    names = strip_prefix(state, LDM_PREFIXES["unet"])
    ema = {k: state.get("model_ema.diffusion_model" + k.replace(".", "")) for k in names}
    missing = [k for k, v in ema.items() if v is None]
    if missing:
        raise XRealInputError("input", f"{source} has no EMA weights for {len(missing)} UNet keys, e.g. {missing[0]!r}")
    return ema


def from_compvis(path: str | Path, original_config: str | Path | None = None, ema: bool = False) -> Conversion:
    """XReal / Cheff (CompVis ``LatentDiffusion``) weights.

    Args:
        path: the backbone checkpoint (UNet, autoencoder and BERT text encoder in one file), or a folder holding
            XReal's ``backbone.pth`` and, optionally, ``anatomy_controller.pth`` (taken as the same family).
        original_config: the CompVis YAML the model was trained with; without it, XReal's published values are
            used for what the tensors' shapes cannot tell (heads, image size, schedule, scale factor).
        ema: use the UNet's EMA weights (``model_ema.*``) rather than the trained ones.
    """
    path = Path(path)
    backbone, controller = (path / "backbone.pth", path / "anatomy_controller.pth") if path.is_dir() else (path, None)
    settings = read_original_config(original_config)
    state = read_checkpoint(backbone)
    parts = {name: strip_prefix(state, prefix) for name, prefix in LDM_PREFIXES.items()}
    if not parts["unet"] or not parts["autoencoder"]:
        raise XRealInputError(
            "input", f"{backbone} has no model.diffusion_model.* / first_stage_model.* keys: not a CompVis latent "
            "diffusion checkpoint (use --from diffusers or --from model-zoo for those formats)",
        )  # fmt: skip
    if "transformer.token_emb.weight" not in parts["text_encoder"]:
        raise XRealInputError(
            "input", f"{backbone}: cond_stage_model is not a BERTEmbedder (x-transformers); only XReal / Cheff-style "
            "text encoders are supported (convert a Stable Diffusion model from its diffusers folder)",
        )  # fmt: skip
    unet_state = _ema_unet(state, backbone) if ema else parts["unet"]
    unet_args = compvis_unet_arguments(unet_state, settings)
    ae_args = compvis_autoencoder_arguments(parts["autoencoder"])
    text_args = compvis_text_encoder_arguments(parts["text_encoder"], settings)
    family = f"compvis:{sha256(backbone)[:16]}"
    definitions = compvis_definitions({"unet": unet_args, "autoencoder": ae_args, "text_encoder": text_args})
    networks = {
        "unet": _loaded(definitions["unet"], ldm_unet_to_monai(unet_state, unet_args["num_res_blocks"]),
                        f"{backbone} (UNet)"),
        "autoencoder": _loaded(definitions["autoencoder"], _compvis_autoencoder(parts["autoencoder"], ae_args),
                               f"{backbone} (autoencoder)"),
        "text_encoder": _loaded(definitions["text_encoder"], parts["text_encoder"], f"{backbone} (text encoder)"),
    }  # fmt: skip
    inputs = [backbone]
    if controller is not None and controller.is_file():
        controller_state = read_checkpoint(controller)
        controller_state = strip_prefix(controller_state, LDM_PREFIXES["autoencoder"]) or controller_state
        args = compvis_autoencoder_arguments(controller_state)
        networks["anatomy_controller"] = _loaded(
            compvis_definitions({"anatomy_controller": args})["anatomy_controller"],
            _compvis_autoencoder(controller_state, args), f"{controller} (anatomy controller)",
        )  # fmt: skip
        inputs.append(controller)
    notes = [f"UNet weights: {'EMA (model_ema.*)' if ema else 'trained (model.diffusion_model.*)'}.",
             f"Original config: {original_config or 'not given; XReal published values used'}."]  # fmt: skip
    standalone = path / "ldm_ae.pth" if path.is_dir() else None
    if standalone is not None and standalone.is_file():  # XReal ships its first stage on its own too
        same = _same_tensors(strip_prefix(read_checkpoint(standalone), "first_stage_model.") or
                             read_checkpoint(standalone), parts["autoencoder"])  # fmt: skip
        notes.append(f"ldm_ae.pth {'equals' if same else 'differs from'} the backbone's first_stage_model; the "
                     "backbone's (the one its UNet was trained on) is used.")  # fmt: skip
        inputs.append(standalone)
    scheduler = compvis_scheduler_definition(settings)
    check_betas(ConfigParser({"s": scheduler}).get_parsed_content("s"), state.get("betas"), str(backbone))
    image_size = int(settings["image_size"])
    return Conversion(
        source_format="compvis", inputs=inputs, networks=networks, scheduler=scheduler,
        scale_factor=float(settings["scale_factor"]), image_range=(0.0, 1.0), spatial_shape=(image_size, image_size),
        families={component: family for component in ("autoencoder", "anatomy_controller") if component in networks},
        notes=notes,
    )  # fmt: skip


def _same_tensors(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> bool:
    """Equal networks: the same keys (training-loss entries aside) holding equal tensors."""
    first = {k: v for k, v in first.items() if not k.startswith("loss.")}
    second = {k: v for k, v in second.items() if not k.startswith("loss.")}
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _compvis_autoencoder(state: Mapping[str, torch.Tensor], arguments: Mapping[str, Any]) -> dict:
    return ldm_autoencoder_to_monai(state, arguments["num_res_blocks"], arguments["attention_levels"])


# -- diffusers folders ------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise XRealInputError("input", f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise XRealInputError("input", f"invalid JSON in {path}: {err}") from err


def _diffusers_weights(folder: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """A diffusers model folder's tensors: single-file safetensors / bin (fp32 before fp16), or a sharded index."""
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                 "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin"):  # fmt: skip
        if (folder / name).is_file():
            return read_checkpoint(folder / name), [folder / name]
    for index in sorted(folder.glob("diffusion_pytorch_model*.index.json")):
        files = sorted({folder / f for f in _read_json(index)["weight_map"].values()})
        state = {}
        for f in files:
            state.update(read_checkpoint(f))
        return state, files
    raise XRealInputError("input", f"no diffusion_pytorch_model.safetensors / .bin in {folder}")


def from_diffusers(folder: str | Path) -> Conversion:
    """A diffusers Stable Diffusion folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``),
    e.g. RoentGen; the CLIP text encoder and tokenizer folders are copied into the bundle as they are."""
    folder = Path(folder)
    if not folder.is_dir():
        raise XRealInputError("input", f"no such folder: {folder}")
    unet_config, vae_config = _read_json(folder / "unet" / "config.json"), _read_json(folder / "vae" / "config.json")
    scheduler = diffusers_scheduler_definition(_read_json(folder / "scheduler" / "scheduler_config.json"))
    for sub in ("text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise XRealInputError("input", f"missing folder {folder / sub}")
    for key in ("shift_factor", "latents_mean", "latents_std"):
        if vae_config.get(key) is not None:
            raise XRealInputError(
                "input", f"vae {key}={vae_config[key]!r} is not supported (Stable Diffusion 1/2 VAEs)"
            )
    unet_state, unet_files = _diffusers_weights(folder / "unet")
    vae_state, vae_files = _diffusers_weights(folder / "vae")
    unet_args, ae_args = diffusers_unet_arguments(unet_config), diffusers_autoencoder_arguments(vae_config)
    levels = len(ae_args["channels"])
    networks = {
        "unet": _network(unet_args, _UNET, diffusers_unet_to_monai(unet_state), f"{folder / 'unet'}"),
        "autoencoder": _network(ae_args, _AUTOENCODER, diffusers_autoencoder_to_monai(
            vae_state, levels, ae_args["num_res_blocks"]), f"{folder / 'vae'}"),
    }  # fmt: skip
    text_config = _read_json(folder / "text_encoder" / "config.json")
    max_length = int(text_config.get("max_position_embeddings", 77))
    size = int(unet_config.get("sample_size", 64)) * 2 ** (levels - 1)
    text_files = sorted(p for sub in ("text_encoder", "tokenizer") for p in (folder / sub).iterdir() if p.is_file())
    return Conversion(
        source_format="diffusers", inputs=[*unet_files, *vae_files, *text_files], networks=networks,
        scheduler=scheduler, scale_factor=float(vae_config.get("scaling_factor", 0.18215)), image_range=(-1.0, 1.0),
        spatial_shape=(size, size), families={"autoencoder": f"diffusers:{sha256(vae_files[0])[:16]}"},
        text_encoder={"_target_": "monai_xreal.text.HFTextEncoder", "path": "$@bundle_root + '/models/text_encoder'",
                      "tokenizer_path": "$@bundle_root + '/models/tokenizer'", "max_length": max_length,
                      "use_attention_mask": bool(text_config.get("use_attention_mask", False))},
        copied_folders={"text_encoder": folder / "text_encoder", "tokenizer": folder / "tokenizer"},
        notes=["The CLIP text encoder runs without an attention mask, as Stable Diffusion pipelines run it."],
    )  # fmt: skip


# -- MONAI model-zoo bundle -------------------------------------------------------------------------------------------


def _model_zoo_file(root: Path, parser: ConfigParser, path_id: str, fallbacks: tuple[str, ...]) -> Path:
    names = [str(parser[path_id]).replace("$@model_dir + '/", "").rstrip("'")] if path_id in parser else []
    for name in (*names, *fallbacks):
        if (root / "models" / name).is_file():
            return root / "models" / name
    raise XRealInputError("input", f"missing weight file {root / 'models' / (names or fallbacks)[0]}")


def from_model_zoo(bundle: str | Path, text_encoder: str | Path | None) -> Conversion:
    """MONAI model-zoo ``cxr_image_synthesis_latent_diffusion_model`` (MONAI Generative names, v-prediction DDIM).

    Args:
        bundle: the downloaded bundle folder (``configs/inference.json``, ``models/``).
        text_encoder: a local Stable Diffusion 2.1-base folder with ``text_encoder/`` and ``tokenizer/`` (the
            original bundle downloads them from the hub at run time; this one never does).
    """
    root = Path(bundle)
    parser = ConfigParser()
    config = root / "configs" / "inference.json"
    if not config.is_file():
        raise XRealInputError("input", f"missing file {config}")
    parser.read_config(str(config))
    for key in ("autoencoder_def", "diffusion_def", "scheduler"):
        if key not in parser:
            raise XRealInputError("input", f"{config} has no {key!r}: not cxr_image_synthesis_latent_diffusion_model")
    if text_encoder is None:
        raise XRealInputError(
            "text_encoder", "the model-zoo bundle conditions on Stable Diffusion 2.1-base's CLIP text encoder; pass "
            "--text-encoder DIR (a local folder with text_encoder/ and tokenizer/)",
        )  # fmt: skip
    text_root = Path(text_encoder)
    for sub in ("text_encoder", "tokenizer"):
        if not (text_root / sub).is_dir():
            raise XRealInputError("text_encoder", f"missing folder {text_root / sub}")
    networks, inputs = {}, []
    for component, key, path_id, fallbacks in (
        ("autoencoder", "autoencoder_def", "load_autoencoder_path", ("autoencoder.pt", "autoencoder.pth")),
        ("unet", "diffusion_def", "load_diffusion_path", ("model.pt", "diffusion_model.pth", "diffusion_model.pt")),
    ):  # fmt: skip
        definition = with_fast_attention({k: v for k, v in parser[key].items() if not k.startswith("_requires_")})
        weights = _model_zoo_file(root, parser, path_id, fallbacks)
        module = load_generative_state(_build(definition), read_checkpoint(weights), str(weights))
        networks[component] = (definition, module)
        inputs.append(weights)
    scheduler = {k: v for k, v in parser["scheduler"].items() if not k.startswith("_requires_")}
    text_config = _read_json(text_root / "text_encoder" / "config.json")
    autoencoder = networks["autoencoder"][1]
    size = 64 * 2 ** (len(autoencoder.encoder.channels) - 1)  # its sampler draws 64x64 latents
    return Conversion(
        source_format="model-zoo", inputs=[config, *inputs], networks=networks, scheduler=scheduler,
        scale_factor=MODEL_ZOO_SCALE_FACTOR, image_range=(0.0, 1.0), spatial_shape=(size, size),
        families={"autoencoder": f"model-zoo:{sha256(inputs[0])[:16]}"},
        text_encoder={"_target_": "monai_xreal.text.HFTextEncoder", "path": "$@bundle_root + '/models/text_encoder'",
                      "tokenizer_path": "$@bundle_root + '/models/tokenizer'",
                      "max_length": int(text_config.get("max_position_embeddings", 77)), "use_attention_mask": False},
        copied_folders={"text_encoder": text_root / "text_encoder", "tokenizer": text_root / "tokenizer"},
        notes=["Scale factor 0.3 and v-prediction as in the model-zoo bundle's sampler (v1.0.x).",
               "MONAI Generative key names renamed to MONAI core's (MONAI's load_old_state_dict, checked key by key)."],
    )  # fmt: skip


def convert(source_format: str, path: str | Path, **options) -> Conversion:
    """Dispatch to the reader of ``source_format`` (:data:`FORMATS`)."""
    if source_format == "compvis":
        return from_compvis(path, options.get("original_config"), options.get("ema", False))
    if source_format == "diffusers":
        return from_diffusers(path)
    if source_format == "model-zoo":
        return from_model_zoo(path, options.get("text_encoder"))
    raise XRealInputError("from", f"unknown format {source_format!r}; choose one of {', '.join(FORMATS)}")
