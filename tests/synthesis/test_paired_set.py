# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Writing paired sets (phantoms, simulated radiographs): complete or absent per sample, resumable, shardable."""

from __future__ import annotations

import json
import threading

import pytest

from monai_xreal.data.phantoms import PhantomGenerator
from monai_xreal.errors import XRealInputError
from monai_xreal.io.hashing import sha256_file
from monai_xreal.synthesis.paired_set import write_paired_set

SETTINGS = {"maker": "phantoms", "size": [64, 64], "seed": 4}


def _files(folder):
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


class _Dies:
    """The phantom maker, failing once at one index (a crash in the middle of a run)."""

    def __init__(self, at: int) -> None:
        self.maker, self.at = PhantomGenerator(size=64, seed=4), at

    def __call__(self, index: int):
        if index == self.at:
            self.at = -1
            raise OSError("disk full")
        return self.maker(index)


def test_an_interrupted_run_finishes_to_the_same_set(tmp_path):
    whole = write_paired_set(PhantomGenerator(size=64, seed=4), tmp_path / "whole", 6, SETTINGS, name="phantom")
    with pytest.raises(OSError):
        write_paired_set(_Dies(at=3), tmp_path / "cut", 6, SETTINGS, name="phantom")
    cut = tmp_path / "cut"
    done = {json.loads(line)["index"] for line in (cut / "manifest.jsonl").read_text().splitlines()}
    assert done == {0, 1, 2} and not (cut / "datalist.json").exists()
    assert not [p for p in cut.rglob(".partial-*")]  # nothing half-made left behind
    # a file damaged after the crash is made again
    (cut / "images" / "phantom_00001.png").write_bytes(b"broken")
    write_paired_set(PhantomGenerator(size=64, seed=4), cut, 6, SETTINGS, name="phantom")
    assert _files(whole.parent) == _files(cut)


def test_ranks_share_the_work_and_agree_with_one_process(tmp_path):
    one = write_paired_set(PhantomGenerator(size=64, seed=4), tmp_path / "one", 5, SETTINGS, name="phantom")
    two = tmp_path / "two"
    barrier = threading.Barrier(2, timeout=120)
    errors = []

    def rank(r: int) -> None:  # two ranks at once, as torchrun starts them, meeting at the same barriers
        try:
            write_paired_set(PhantomGenerator(size=64, seed=4), two, 5, SETTINGS, name="phantom", rank=r,
                             world_size=2, barrier=barrier.wait)  # fmt: skip
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and _files(one.parent) == _files(two)
    with pytest.raises(RuntimeError, match="missing"):  # a rank that did not do its share is found out
        write_paired_set(PhantomGenerator(size=64, seed=4), tmp_path / "three", 4, SETTINGS, name="phantom",
                         rank=0, world_size=2)  # fmt: skip


def test_another_set_in_the_folder_is_refused(tmp_path):
    write_paired_set(PhantomGenerator(size=64, seed=4), tmp_path / "set", 2, SETTINGS, name="phantom")
    with pytest.raises(XRealInputError, match=r"other settings \(num, seed\)"):
        write_paired_set(
            PhantomGenerator(size=64, seed=5), tmp_path / "set", 3, {**SETTINGS, "seed": 5}, name="phantom"
        )
    (tmp_path / "other" / "images").mkdir(parents=True)
    with pytest.raises(XRealInputError, match="another kind"):
        write_paired_set(PhantomGenerator(size=64, seed=4), tmp_path / "other", 2, SETTINGS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(XRealInputError, match="not a folder"):
        write_paired_set(PhantomGenerator(size=64, seed=4), tmp_path / "file", 2, SETTINGS)
