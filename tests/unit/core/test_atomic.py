"""`seglab.atomic`: a write that fails leaves the previous file and no temporary one, and says why."""

from __future__ import annotations

import errno
import os

import pytest

from seglab.atomic import write_atomically, write_text_atomically, writes_in_progress
from seglab.errors import OutputError


def test_a_full_disk_mid_write_keeps_the_previous_file_and_says_how_much_space(tmp_path):
    path = tmp_path / "metrics.csv"
    write_text_atomically(path, "epoch\n0\n")
    seen = []

    def fill_up(temporary):
        seen.append(writes_in_progress())
        temporary.write_bytes(b"x" * 5000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError) as raised:
        write_atomically(path, fill_up)
    message = str(raised.value)
    assert message.startswith(f"cannot write {path}: No space left on device (ENOSPC); the previous metrics.csv is "
                              f"unchanged. The disk holding {tmp_path} has ")
    assert "it needs more than the 4.9 KiB written before the disk filled" in message
    assert path.read_text() == "epoch\n0\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
    assert seen == [1] and writes_in_progress() == 0


def test_an_interrupted_write_leaves_no_temporary_file_and_the_new_file_arrives_whole(tmp_path):
    path = tmp_path / "out.txt"

    def interrupted(temporary):
        temporary.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted)
    assert list(tmp_path.iterdir()) == []
    write_text_atomically(path, "whole\n")
    assert path.read_text() == "whole\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
