"""The run folder's lock goes with the process that trains: DataLoader workers forked while it is held do not
hold it, so after `kill -9` of the main process a `--resume` goes ahead at once, even while its orphaned workers
are still alive."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from test_training_faults import run_seglab_here, start_seglab, wait_until_paused, write_config

from training_helpers import PAUSE_LOADING_VARIABLE, register_tiny_model


def members_of_group(group: int) -> list[int]:
    """The live processes of process group `group` (the killed trainer's orphaned workers)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_after_kill_9_of_the_trainer_a_resume_goes_ahead_while_its_workers_still_live(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "orphans"
    config = write_config(tmp_path, "orphans", num_workers=2)
    # Each worker's 5th item, the first batch of epoch 1: the workers stop there (until paused.go exists) and the
    # main process waits for them, with epoch 0's last.ckpt on disk.
    process = start_seglab(["train", str(config)], tmp_path, **{PAUSE_LOADING_VARIABLE: "5"})
    try:
        wait_until_paused(process, tmp_path)
        process.send_signal(signal.SIGKILL)  # the main process alone, as the OOM killer would
        process.wait()
        workers = members_of_group(process.pid)
        assert workers, "the trainer's DataLoader workers should outlive it for this test"
        register_tiny_model(monkeypatch)
        started = time.monotonic()
        run_seglab_here(["train", "--resume", str(run_dir)])  # refused "in use" if a worker held the lock
        print(f"resumed in {time.monotonic() - started:.1f} s with {len(workers)} orphaned workers alive")
        # The paused training workers were still there when the resume ran (the validation ones may have left).
        assert any(os.path.exists(f"/proc/{pid}") for pid in workers)
    finally:
        (tmp_path / "paused.go").touch()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "seglab process" in (run_dir / ".lock").read_text()
