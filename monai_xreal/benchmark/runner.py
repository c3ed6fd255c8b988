# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Side-by-side sampling measurements on one machine and one set of weights: speed, overhead, memory, adherence."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from monai_xreal.benchmark.recipes import SamplingRecipe
from monai_xreal.benchmark.timing import NetworkTimes, peak_memory, time_networks, timed
from monai_xreal.control.sampling import per_sample_randn
from monai_xreal.metrics.adherence import anatomy_dice, segment

__all__ = [
    "VARIANTS",
    "BenchmarkCondition",
    "RecipeResult",
    "benchmark_conditions",
    "compare_text_to_image",
    "measure_recipe",
    "measure_variant",
    "plain_text_to_image",
]  # fmt: skip

# findings that come with a pathology region, so every benchmark image runs both of XReal's stages
_REGION_FINDINGS = ("Pleural Effusion", "Pneumothorax", "Consolidation", "Cardiomegaly")


@dataclass
class BenchmarkCondition:
    anatomy: torch.Tensor  # (1, H, W) label map
    pathology: torch.Tensor  # (1, H, W) binary
    prompt: str
    seed: int
    image: torch.Tensor | None = None  # (1, H, W) the radiograph the conditions were taken from, in [0, 1]


def benchmark_conditions(num: int, size: int, seed: int = 1000, source: str = "simulated") -> list[BenchmarkCondition]:
    """``num`` conditions, each with a finding region (two-stage sampling), findings in turn: simulated radiographs'
    (held-out real lung outlines), phantoms' anatomy and finding masks, or (``"sample"``) the embedded bundle's
    sample condition at ``size`` with a seed per condition, which needs no data package (for timing only: one
    anatomy)."""
    if source == "sample":
        return _sample_conditions(num, size, seed)
    if source == "simulated":
        from monai_xreal.simulation import RadiographSimulator

        maker = RadiographSimulator(size=max(size, 64), seed=seed, lung_shapes="held-out")
    elif source == "phantoms":
        from monai_xreal.data.phantoms import PhantomGenerator

        maker = PhantomGenerator(size=size, seed=seed)
    else:
        raise ValueError(f"unknown condition source {source!r}: 'simulated', 'phantoms' or 'sample'")
    conditions, index = [], 0
    while len(conditions) < num:
        if index >= 10 * num + 100:
            raise RuntimeError(f"seed {seed} gives too few findings with a region; try another seed")
        finding = _REGION_FINDINGS[len(conditions) % len(_REGION_FINDINGS)]
        sample = maker(index, findings=[finding])
        index += 1
        if not np.asarray(sample.pathology).any():  # the finding did not fit this anatomy: draw the next one
            continue
        anatomy, image, pathology = (torch.as_tensor(np.asarray(m)).float()
                                     for m in (sample.anatomy, sample.image, sample.pathology))  # fmt: skip
        conditions.append(BenchmarkCondition(anatomy, pathology, finding, seed + index - 1, image))  # (1, X, Y) each
    return conditions


def _sample_conditions(num: int, size: int, seed: int) -> list[BenchmarkCondition]:
    from monai_xreal.bundle import default_bundle_path
    from monai_xreal.io.readers import load_mask

    folder = default_bundle_path() / "sample_data"
    masks = [load_mask(folder / f"{name}.png", name)[None] for name in ("anatomy", "pathology")]
    anatomy, pathology = (torch.nn.functional.interpolate(m, size=(size, size), mode="nearest")[0] for m in masks)
    return [BenchmarkCondition(anatomy, pathology, _REGION_FINDINGS[i % len(_REGION_FINDINGS)], seed + i)
            for i in range(num)]  # fmt: skip


@dataclass
class RecipeResult:
    """One row of the benchmark table."""

    recipe: SamplingRecipe
    images: int
    seconds: float
    network: NetworkTimes
    peak_memory_mib: float | None
    memory_kind: str
    dice: float | None
    variant: str = "fp32"
    split_seconds: float | None = None  # wall time of the instrumented run

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    @property
    def overhead(self) -> float | None:
        """Wall time over the time inside the networks, in the instrumented run: 1 means the sampler costs nothing."""
        if self.split_seconds is None or self.network.total <= 0:
            return None
        return self.split_seconds / self.network.total

    def as_dict(self) -> dict:
        return {
            **self.recipe.as_dict(), "variant": self.variant, "images": self.images, "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "unet_evaluations_per_image": self.network.unet_samples / self.images if self.network.calls else None,
            "network_seconds": dict(self.network.seconds), "network_calls": dict(self.network.calls),
            "overhead": self.overhead, "peak_memory_mib": self.peak_memory_mib, "memory_kind": self.memory_kind,
            "mean_dice": self.dice,
        }  # fmt: skip


def _batches(conditions: Sequence[BenchmarkCondition], size: int) -> Iterator[list[BenchmarkCondition]]:
    for start in range(0, len(conditions), size):
        yield list(conditions[start : start + size])


def _generate(pipeline, batch: list[BenchmarkCondition], recipe: SamplingRecipe) -> torch.Tensor:
    return pipeline(
        torch.stack([c.anatomy for c in batch]), torch.stack([c.pathology for c in batch]), [c.prompt for c in batch],
        seed=[c.seed for c in batch], **recipe.pipeline_kwargs(),
    )  # fmt: skip


def _timed_run(pipeline, conditions: Sequence[BenchmarkCondition], recipe: SamplingRecipe) -> tuple[float, list]:
    return timed(lambda: [_generate(pipeline, batch, recipe) for batch in _batches(conditions, recipe.batch_size)],
                 pipeline.device)  # fmt: skip


def measure_recipe(
    pipeline,
    conditions: Sequence[BenchmarkCondition],
    recipe: SamplingRecipe,
    segmenter: nn.Module | None = None,
    split_network_time: bool = True,
    variant: str = "fp32",
) -> RecipeResult:
    """Generate every condition with ``recipe`` (after one warm-up batch) and measure it.

    Throughput and peak memory come from a plain run; with ``split_network_time`` a second, instrumented run times
    each network call (synchronising on a GPU, which would slow the first) for the overhead ratio and the UNet
    evaluation count.

    Args:
        pipeline: an :class:`~monai_xreal.XRealPipeline`.
        conditions: from :func:`benchmark_conditions`.
        recipe: steps, solver, guidance batching and batch size.
        segmenter: the anatomy judge, for the mean Dice of the same images (outside the timed part).
        split_network_time: run the instrumented pass.
        variant: a label for the table.
    """
    device = pipeline.device
    _generate(pipeline, list(conditions[: recipe.batch_size]), recipe)  # warm-up: allocator, caches, lazy init
    with peak_memory(device) as memory:
        seconds, images = _timed_run(pipeline, conditions, recipe)
    network, split_seconds = NetworkTimes(), None
    if split_network_time:
        with time_networks(pipeline, device) as network:
            split_seconds, _ = _timed_run(pipeline, conditions, recipe)
    dice = None
    if segmenter is not None:
        generated = torch.cat(images).float()
        requested = torch.stack([c.anatomy for c in conditions])
        dice = float(anatomy_dice(segment(segmenter, generated), requested).mean())
    return RecipeResult(
        recipe, len(conditions), seconds, network, memory.mib, memory.kind, dice, variant, split_seconds
    )  # fmt: skip


@torch.no_grad()
def plain_text_to_image(pipeline, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance_scale: float):
    """Text-to-image with a plain loop over the bundle's MONAI scheduler (deterministic DDIM, eta 0): the floor a
    sampler written for one purpose reaches, to compare :class:`~monai_xreal.XRealPipeline` against. Like the
    pipeline, it runs guidance's two branches as one batch, and skips the unconditional one at ``guidance_scale`` 1.

    Returns:
        ``(B, 1, H, W)`` images in [0, 1].
    """
    scheduler, unet, device = pipeline.scheduler, pipeline.unet, pipeline.device
    context = pipeline.encode_prompts(list(prompts))
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    latents = per_sample_randn((unet.in_channels, *pipeline.latent_shape()), generators, device, context.dtype)
    guided = guidance_scale != 1.0
    if guided:
        context = torch.cat([pipeline.encode_prompts([""] * len(prompts)), context])
    scheduler.set_timesteps(steps, device=device)
    for t in scheduler.timesteps:
        model_input = torch.cat([latents, latents]) if guided else latents
        prediction = unet(model_input, t.reshape(1).expand(len(model_input)), context=context)
        if guided:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        latents, _ = scheduler.step(prediction, t, latents, eta=0.0)
    return pipeline.decode(latents)


def compare_text_to_image(pipeline, batch_size: int, steps: int, seed: int = 0, repeats: int = 3) -> dict:
    """Time the same text-to-image sampling through the pipeline and through :func:`plain_text_to_image`.

    Both draw the same initial noise and run deterministic DDIM on the scheduler's own timestep grid, so their
    images must agree. The two alternate, so drift on a shared machine falls on both; the ratio is the pipeline's
    median time over the plain loop's (minimum ratio beside it).
    """
    prompts = ["Pleural Effusion"] * batch_size
    seeds = [seed + i for i in range(batch_size)]
    guidance = float(pipeline.sampling_defaults["guidance_scale"])
    device = pipeline.device

    def ours():
        return pipeline(
            None, None, prompts, num_inference_steps=steps, guidance_scale=guidance, eta=0.0, seed=seeds,
            timestep_spacing="scheduler",
        )  # fmt: skip

    def plain():
        return plain_text_to_image(pipeline, prompts, seeds, steps, guidance)

    ours(), plain()  # warm-up
    ours_runs, plain_runs = [], []
    for _ in range(repeats):
        ours_runs.append(timed(ours, device))
        plain_runs.append(timed(plain, device))
    ours_seconds = float(np.median([s for s, _ in ours_runs]))
    plain_seconds = float(np.median([s for s, _ in plain_runs]))
    return {
        "batch_size": batch_size, "steps": steps, "guidance_scale": guidance, "repeats": repeats,
        "reference": "plain loop over the bundle's MONAI DDIMScheduler",
        "pipeline_seconds": ours_seconds, "reference_seconds": plain_seconds, "ratio": ours_seconds / plain_seconds,
        "min_ratio": min(o / p for (o, _), (p, _) in zip(ours_runs, plain_runs)),
        "max_abs_image_difference": float((ours_runs[0][1] - plain_runs[0][1]).abs().max()),
    }  # fmt: skip


@contextlib.contextmanager
def _bf16_autocast(pipeline):
    with torch.autocast(pipeline.device.type, dtype=torch.bfloat16):
        yield


@contextlib.contextmanager
def _channels_last(pipeline):
    pipeline.unet.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        pipeline.unet.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def _compiled(pipeline):
    before = pipeline.unet._compiled_call_impl  # nn.Module.compile's own switch; None is eager
    pipeline.unet.compile()
    try:
        yield
    finally:
        pipeline.unet._compiled_call_impl = before


@contextlib.contextmanager
def _attention(pipeline, flash: bool):
    blocks = [m for m in pipeline.unet.modules() if hasattr(m, "use_flash_attention")]
    before = [m.use_flash_attention for m in blocks]
    for m in blocks:
        m.use_flash_attention = flash
    try:
        yield
    finally:
        for m, value in zip(blocks, before):
            m.use_flash_attention = value


VARIANTS = {
    "fp32": contextlib.nullcontext,
    "bf16-autocast": _bf16_autocast,
    "channels-last": _channels_last,
    "torch-compile": _compiled,
    "sdpa-attention": lambda pipeline: _attention(pipeline, True),
    "eager-attention": lambda pipeline: _attention(pipeline, False),
}
"""UNet execution variants: autocast, memory format, ``torch.compile``, and the UNet's ``use_flash_attention`` (torch
SDPA, which picks flash attention on a GPU) against its plain matmul-softmax attention."""


def measure_variant(
    pipeline, conditions: Sequence[BenchmarkCondition], recipe: SamplingRecipe, variant: str, segmenter=None
) -> RecipeResult:
    """:func:`measure_recipe` under one of :data:`VARIANTS` (wall time only: per-call timing would break compiled
    graphs and autocast regions apart)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    with VARIANTS[variant](pipeline):
        return measure_recipe(pipeline, conditions, recipe, segmenter, split_network_time=False, variant=variant)
