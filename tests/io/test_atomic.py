# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
import pytest

from monai_xreal.io.atomic import atomic_path, write_text_atomically


def test_a_file_is_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "new" / "report.json"
    assert write_text_atomically(target, '{"a": 1}') == target and target.read_text() == '{"a": 1}'
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(".") and temporary.suffix == ".json"
        temporary.write_text("half")
        raise RuntimeError("killed midway")
    assert target.read_text() == '{"a": 1}'  # the old content stays, and no temporary is left behind
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]
