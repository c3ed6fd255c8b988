# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A converted model against the diffusers pipeline it came from: same weights, steps, guidance, batch and noise.

The diffusers folder is converted exactly as ``monai-xreal convert --from diffusers`` converts it (into a temporary
bundle, loaded with ``XRealPipeline.from_bundle``), so the figure is the one a user of the converted bundle gets.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.utils import optional_import
from tqdm.auto import tqdm

from monai_xreal.benchmark.runner import VARIANTS
from monai_xreal.benchmark.timing import format_spread, spread, timed
from monai_xreal.control.sampling import per_sample_randn
from monai_xreal.errors import XRealInputError

__all__ = ["compare_with_diffusers", "format_diffusers_comparison"]

diffusers, _has_diffusers = optional_import("diffusers")


def _load(folder: Path, device: torch.device | str | None):
    """The converted pipeline (through a bundle written as ``convert`` writes it) and diffusers' own."""
    from monai_xreal import XRealPipeline
    from monai_xreal.interop.bundle_writer import write_bundle
    from monai_xreal.interop.convert import from_diffusers

    if not _has_diffusers:
        raise XRealInputError("--against-diffusers", "needs the diffusers package (pip install diffusers)")
    conversion = from_diffusers(folder)
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(scratch) / "converted"
        write_bundle(conversion, bundle)
        ours = XRealPipeline.from_bundle(bundle, device=device)
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, requires_safety_checker=False
    ).to(ours.device)
    theirs.set_progress_bar_config(disable=True)
    return ours, theirs


def compare_with_diffusers(
    folder: str | Path,
    batch_sizes: Sequence[int] = (2,),
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    repeats: int = 4,
    seed: int = 0,
    device: torch.device | str | None = None,
    prompt: str = "right pleural effusion",
    progress: bool = True,
    bf16: bool = False,
) -> dict:
    """Time text-to-image sampling of a converted diffusers model against ``StableDiffusionPipeline``.

    Both run deterministic DDIM (eta 0) on diffusers' timestep grid from the same initial noise (sample ``i`` from
    ``seed + i``), so their images must agree; each round times both, the order alternating between rounds, so a
    drifting machine slows both alike. The ratio is ours over theirs, per round.

    Args:
        folder: a diffusers Stable Diffusion folder.
        batch_sizes: images per call; one comparison per batch size.
        num_inference_steps, guidance_scale: the sampling settings of both.
        repeats: timed rounds after one warm-up call of each.
        seed: the first sample's seed.
        device: where both run (default: the bundle config's device).
        prompt: the prompt of every image.
        progress: a progress bar over the rounds.
        bf16: run both under the same bfloat16 autocast (what a GPU user runs; the images then agree to bf16
            rounding, not exactly).

    Returns:
        ``{"rows": [...], "hardware": ...}``: per batch size, the seconds and ratio spreads
        (:func:`~monai_xreal.benchmark.timing.spread`) and the largest image difference.
    """
    from monai_xreal.benchmark.suite import hardware

    folder = Path(folder)
    if not folder.is_dir():
        raise XRealInputError("--against-diffusers", f"no such folder: {folder}")
    ours, theirs = _load(folder, device)
    rows = []
    with tqdm(
        total=len(batch_sizes) * (repeats + 1), desc="against diffusers", unit="round", disable=not progress
    ) as bar:
        for batch in batch_sizes:
            rows.append(
                _compare(ours, theirs, batch, num_inference_steps, guidance_scale, repeats, seed, prompt, bar, bf16)
            )
    return {"hardware": hardware(ours.device), "precision": "bf16 autocast" if bf16 else "fp32", "rows": rows}


def _compare(ours, theirs, batch, steps, guidance, repeats, seed, prompt, bar, bf16) -> dict:
    device = ours.device
    seeds = [seed + i for i in range(batch)]
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    noise = per_sample_randn((ours.unet.in_channels, *ours.latent_shape()), generators, device, torch.float32)
    height, width = ours.spatial_shape

    def precision():  # the same for both sides: the benchmark's own bf16-autocast variant
        return VARIANTS["bf16-autocast"](ours) if bf16 else contextlib.nullcontext()

    def run_ours() -> torch.Tensor:
        with precision():
            return ours(prompt=[prompt] * batch, num_inference_steps=steps, guidance_scale=guidance, eta=0.0,
                        seed=seeds)  # fmt: skip

    def run_theirs() -> torch.Tensor:
        with precision():
            images = theirs([prompt] * batch, num_inference_steps=steps, guidance_scale=guidance, eta=0.0,
                            latents=noise.clone(), output_type="pt", height=height, width=width).images  # fmt: skip
        return images.float().mean(dim=1, keepdim=True)  # the converted pipeline returns the channels' mean

    first_ours, first_theirs = timed(run_ours, device)[1], timed(run_theirs, device)[1]  # warm-up; images compared
    bar.update()
    ours_seconds, theirs_seconds = [], []
    for round_index in range(repeats):
        order = (run_ours, run_theirs) if round_index % 2 == 0 else (run_theirs, run_ours)
        seconds = {sample: timed(sample, device)[0] for sample in order}
        ours_seconds.append(seconds[run_ours])
        theirs_seconds.append(seconds[run_theirs])
        bar.update()
    return {
        "batch_size": batch, "num_inference_steps": steps, "guidance_scale": guidance, "repeats": repeats,
        "converted_seconds": spread(ours_seconds), "diffusers_seconds": spread(theirs_seconds),
        "ratio": spread([o / t for o, t in zip(ours_seconds, theirs_seconds)]),
        "max_abs_image_difference": float(
            (first_ours.as_tensor().float() - first_theirs.to(first_ours.device)).abs().max()
        ),
    }  # fmt: skip


def format_diffusers_comparison(results: dict) -> str:
    """The comparison as a Markdown table (median with range; rows whose range is too wide are marked)."""
    machine = {**results.get("hardware", {}), **({"precision": results["precision"]} if "precision" in results else {})}
    lines = [", ".join(f"{k}: {v}" for k, v in machine.items()), ""] if machine else []
    lines += ["| batch | steps | guidance | converted s | diffusers s | converted / diffusers | max image diff |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results["rows"]:
        cells = (r["batch_size"], r["num_inference_steps"], f"{r['guidance_scale']:g}",
                 format_spread(r["converted_seconds"]), format_spread(r["diffusers_seconds"]),
                 format_spread(r["ratio"]), f"{r['max_abs_image_difference']:.1e}")  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)
