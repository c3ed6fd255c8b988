# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Where sampling time goes: wall time, time inside the networks, UNet evaluations and peak memory."""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")

__all__ = [
    "TOO_NOISY",
    "NetworkTimes",
    "PeakMemory",
    "format_spread",
    "peak_memory",
    "spread",
    "synchronize",
    "time_networks",
    "timed",
]

TOO_NOISY = 0.10
"""A figure whose repeats span more than this fraction of their median (or that has fewer than 3 repeats) is too
noisy to compare with another: differences below its spread are not differences."""

# the network entry points a pipeline calls: everything else in sampling is the sampler's own overhead
_ENTRY_POINTS = {
    "unet": ("forward",),
    "controlnet": ("forward",),
    "autoencoder": ("encode", "decode"),
    "anatomy_controller": ("encode", "decode"),
    "text_encoder": ("forward",),
}


def timed(call: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """``(seconds, result)`` of ``call()``, the device synchronised before and after so the clock sees its work."""
    synchronize(device)
    start = time.perf_counter()
    result = call()
    synchronize(device)
    return time.perf_counter() - start, result


def spread(values: Sequence[float], too_noisy: float = TOO_NOISY) -> dict:
    """A repeated measurement's median, range and runs, and whether it is too noisy to compare.

    Returns:
        ``{"median", "min", "max", "runs", "relative_range", "too_noisy"}``; ``relative_range`` is
        ``(max - min) / median``; ``too_noisy`` when it exceeds ``too_noisy`` or there are fewer than 3 runs.
    """
    runs = [float(v) for v in values]
    if not runs:
        raise ValueError("a spread needs at least one value")
    median = statistics.median(runs)
    relative = (max(runs) - min(runs)) / abs(median) if median else float("inf")
    return {"median": median, "min": min(runs), "max": max(runs), "runs": runs, "relative_range": relative,
            "too_noisy": len(runs) < 3 or relative > too_noisy}  # fmt: skip


def format_spread(s: Mapping, spec: str = ".3f") -> str:
    """``median (min-max)``, with ``, too noisy`` when :func:`spread` says so."""
    text = f"{s['median']:{spec}} ({s['min']:{spec}}-{s['max']:{spec}})"
    return text + (", too noisy" if s["too_noisy"] else "")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it has seen it finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class NetworkTimes:
    """Seconds spent inside each network, its calls, and the samples the UNet evaluated."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    unet_samples: int = 0  # batch rows through the UNet: one per image per step per guidance branch

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@contextlib.contextmanager
def time_networks(pipeline, device: torch.device) -> Iterator[NetworkTimes]:
    """Time every call into the pipeline's networks while the block runs.

    Each network's entry points are wrapped on the instance and restored afterwards (an instance attribute that was
    there before, such as an outer timer's wrapper, is put back). A call made inside another timed call counts
    within the outer one only. On a GPU each call is synchronised before and after, which makes the split honest
    but slows the run: throughput is measured without these wrappers (see ``measure_recipe``).
    """
    times = NetworkTimes()
    wrapped: list[tuple[nn.Module, str, object]] = []  # (module, method, its own instance attribute before, if any)
    seen: set[tuple[int, str]] = set()
    depth = [0]

    def wrap(name: str, module: nn.Module, method: str) -> None:
        if (id(module), method) in seen:  # one module under two names counts under the first
            return
        seen.add((id(module), method))
        original = getattr(module, method)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if depth[0]:  # inside another timed call: its time is already being counted
                return original(*args, **kwargs)
            synchronize(device)
            start = time.perf_counter()
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1
                synchronize(device)
                times.seconds[name] = times.seconds.get(name, 0.0) + time.perf_counter() - start
                times.calls[name] = times.calls.get(name, 0) + 1
                if name == "unet" and args:
                    times.unet_samples += int(args[0].shape[0])

        wrapped.append((module, method, vars(module).get(method, _ABSENT)))
        setattr(module, method, timed)

    for name, methods in _ENTRY_POINTS.items():
        module = getattr(pipeline, name, None)
        if module is None:
            continue
        for method in methods:
            wrap(name, module, method)
    try:
        yield times
    finally:
        for module, method, before in reversed(wrapped):
            if before is _ABSENT:
                delattr(module, method)  # the class's method shows through again
            else:
                setattr(module, method, before)


_ABSENT = object()


@dataclass
class PeakMemory:
    """Peak memory of a block, in MiB: GPU memory allocated by torch, or the process's peak resident set on CPU."""

    mib: float | None = None
    kind: str = ""


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _resident_peak_mib() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Measure the peak memory of the block.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU (Linux): the process's peak resident set
    (``VmHWM``) after resetting it through ``/proc/self/clear_refs``, so it includes everything the process holds
    (weights, Python); ``None`` where the reset is not possible.
    """
    result = PeakMemory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result.mib, result.kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda allocated"
        return
    try:
        _CLEAR_REFS.write_text("5")  # resets the peak resident set to the current one
        resettable = True
    except OSError:
        resettable = False
    yield result
    if resettable:
        result.mib, result.kind = _resident_peak_mib(), "process peak RSS"
