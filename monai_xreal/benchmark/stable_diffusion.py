# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A Stable-Diffusion-format model with random weights, to time converted models against diffusers offline.

No Stable Diffusion weights can be downloaded here, and speed does not depend on what the weights hold: a diffusers
folder with SD 1.x's architecture at a chosen width (random weights, a byte-level CLIP tokenizer) is what
``monai-xreal benchmark --against-diffusers`` needs. Written with diffusers' and transformers' own ``save_pretrained``,
so the folder is exactly what a published model's folder looks like.

Run ``python -m monai_xreal.benchmark.stable_diffusion FOLDER`` to write one.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.utils import optional_import

__all__ = ["PRESETS", "stable_diffusion_networks", "write_random_stable_diffusion"]

PRESETS: dict[str, dict] = {
    "small": {"unet_channels": (64, 128, 256), "latent_size": 32, "context_dim": 256,
              "autoencoder_channels": (32, 64, 64, 64), "text_layers": 4, "text_heads": 4},
    "sd15": {"unet_channels": (320, 640, 1280, 1280), "latent_size": 64, "context_dim": 768,
             "autoencoder_channels": (128, 256, 512, 512), "text_layers": 12, "text_heads": 12},
}  # fmt: skip
"""``small``: what ``docs/benchmarks.md``'s CPU figures use (256x256 images); ``sd15``: Stable Diffusion 1.5's sizes
(UNet 859,520,964 parameters on 64x64x4 latents, VAE 83,653,863, 512x512 images, a 12-layer CLIP text encoder of
width 768; only the tokenizer's vocabulary is smaller than CLIP's)."""

diffusers, _ = optional_import("diffusers")
transformers, _ = optional_import("transformers")


def _randomise(module: torch.nn.Module, seed: int, std: float) -> torch.nn.Module:
    """Every parameter drawn from N(0, std^2): zero-initialised output layers would make the model trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def _byte_tokenizer(folder: Path, max_length: int):
    """A CLIP tokenizer over printable bytes (no merges): real CLIP vocabularies are not available offline."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>", model_max_length=max_length
    )
    tokenizer.save_pretrained(str(folder))
    return tokenizer, vocab


def stable_diffusion_networks(
    unet_channels: Sequence[int],
    latent_size: int,
    context_dim: int,
    text_length: int,
    autoencoder_channels: Sequence[int],
    text_layers: int,
    text_heads: int,
    vocab: dict[str, int],
) -> dict[str, torch.nn.Module]:
    """The UNet, VAE and CLIP text encoder of :func:`write_random_stable_diffusion` (``vocab``: ``size``, ``bos``,
    ``eos`` token ids), initialised by their classes (on the current default device: ``meta`` builds only shapes)."""
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab["size"], hidden_size=context_dim, intermediate_size=4 * context_dim,
        num_hidden_layers=text_layers, num_attention_heads=text_heads, max_position_embeddings=text_length,
        eos_token_id=vocab["eos"], bos_token_id=vocab["bos"],
    ))  # fmt: skip
    levels = len(unet_channels)
    unet = diffusers.UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, block_out_channels=tuple(unet_channels),
        layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1), cross_attention_dim=context_dim,
        attention_head_dim=8, norm_num_groups=32,
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(autoencoder_channels),
        up_block_types=("UpDecoderBlock2D",) * len(autoencoder_channels),
        block_out_channels=tuple(autoencoder_channels), layers_per_block=2, latent_channels=4, norm_num_groups=32,
        sample_size=latent_size * 2 ** (len(autoencoder_channels) - 1),
    )  # fmt: skip
    return {"unet": unet, "vae": vae, "text_encoder": text}


def write_random_stable_diffusion(
    folder: str | Path,
    unet_channels: Sequence[int] = (64, 128, 256),
    latent_size: int = 32,
    context_dim: int = 256,
    text_length: int = 77,
    autoencoder_channels: Sequence[int] = (32, 64, 64, 64),
    seed: int = 0,
    text_layers: int = 4,
    text_heads: int = 4,
):
    """Write a diffusers ``StableDiffusionPipeline`` folder with random weights and return the pipeline.

    The UNet has SD 1.x's block layout scaled to ``unet_channels`` (cross-attention at every level but the last,
    8 heads, 2 residual blocks per level), the VAE SD's KL layout with ``autoencoder_channels`` (8x downsampling for
    four levels), a CLIP text encoder of ``text_layers`` layers and width ``context_dim``, and SD's DDIM schedule.
    :data:`PRESETS` holds the small default and Stable Diffusion 1.5's published sizes.

    Args:
        folder: where to write; created.
        unet_channels: the UNet's channels per level.
        latent_size: the latent grid's side (images are ``latent_size * 2 ** (len(autoencoder_channels) - 1)``).
        context_dim: text embedding width (the UNet's cross-attention dimension).
        text_length: the tokenizer's and text encoder's maximum length.
        autoencoder_channels: the VAE's channels per level.
        seed: seed of the random weights.
        text_layers, text_heads: the text encoder's depth and attention heads.
    """
    if diffusers is None or transformers is None:
        raise ImportError("writing a Stable Diffusion folder needs diffusers and transformers")
    folder = Path(folder)
    tokenizer, vocab = _byte_tokenizer(folder / "tokenizer", text_length)
    networks = stable_diffusion_networks(
        unet_channels, latent_size, context_dim, text_length, autoencoder_channels, text_layers, text_heads,
        vocab={"size": len(vocab), "bos": vocab["<|startoftext|>"], "eos": vocab["<|endoftext|>"]},
    )  # fmt: skip
    unet, vae, text = networks["unet"], networks["vae"], networks["text_encoder"]
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = diffusers.StableDiffusionPipeline(
        vae=_randomise(vae, seed + 1, 0.05), text_encoder=_randomise(text, seed + 2, 0.05), tokenizer=tokenizer,
        unet=_randomise(unet, seed, 0.05), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(str(folder))
    return pipe


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write a random-weight Stable-Diffusion-format diffusers folder")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small",
                        help="sizes: small (the CPU benchmark's) or sd15 (Stable Diffusion 1.5's); default: small")  # fmt: skip
    parser.add_argument("--unet-channels", type=int, nargs="+", default=None, help="override the preset's")
    parser.add_argument("--latent-size", type=int, default=None, help="override the preset's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = dict(PRESETS[args.preset])
    if args.unet_channels is not None:
        sizes["unet_channels"] = tuple(args.unet_channels)
    if args.latent_size is not None:
        sizes["latent_size"] = args.latent_size
    write_random_stable_diffusion(args.folder, seed=args.seed, **sizes)
    print(f"wrote {args.folder}")


if __name__ == "__main__":
    main()
