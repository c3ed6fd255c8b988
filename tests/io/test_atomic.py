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


def test_signals_are_held_back_while_a_temporary_file_is_made_or_removed():
    """SIGTERM inside the block reaches its handler only when the block ends, so a temporary file is never left half
    made or half removed by an interruption; afterwards the handler is the one it was."""
    import os
    import signal
    import time

    from monai_xreal.io.atomic import signals_deferred

    seen = []

    def handler(signum, frame):
        seen.append(time.monotonic())

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert not seen  # held back
            left = time.monotonic()
        time.sleep(0.05)
        assert len(seen) == 1 and seen[0] >= left  # delivered once, after the block
        assert signal.getsignal(signal.SIGTERM) is handler
        os.kill(os.getpid(), signal.SIGTERM)  # outside the block: delivered at once again
        time.sleep(0.05)
        assert len(seen) == 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "report.json") as temporary:
            temporary.write_text("{")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
