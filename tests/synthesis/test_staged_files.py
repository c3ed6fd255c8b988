# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""staged_files: files that belong together land whole, in order, or not at all."""

import pytest

from monai_xreal.synthesis.writer import PARTIAL_PREFIX, remove_partials, staged_files


def test_files_land_together_in_the_order_given(tmp_path):
    with staged_files(tmp_path) as staged:
        for name in ("a.json", "a.png"):
            (staged.folder / name).write_text(name)
            staged.move(staged.folder / name, tmp_path / "sub" / name)
        assert not (tmp_path / "sub").exists()  # nothing is in place before the block ends
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.json", "a.png"]
    assert (tmp_path / "sub" / "a.png").read_text() == "a.png"
    assert not list(tmp_path.glob(f"{PARTIAL_PREFIX}*"))


def test_a_failure_leaves_nothing_and_a_killed_writer_is_cleared(tmp_path):
    with pytest.raises(RuntimeError), staged_files(tmp_path) as staged:
        (staged.folder / "a.png").write_text("half")
        staged.move(staged.folder / "a.png", tmp_path / "a.png")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / f"{PARTIAL_PREFIX}left").mkdir()  # what SIGKILL would leave
    assert remove_partials(tmp_path) == 1 and list(tmp_path.iterdir()) == []
