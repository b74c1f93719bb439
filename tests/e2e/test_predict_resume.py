"""`seglab predict --skip-existing` after `kill -9` half way through a real run: the rerun writes only the missing
outputs, and every output is a whole palette PNG equal to an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from data_fixtures import TESTS_DIR
from predict_helpers import write_images, write_tiny_checkpoint
from seglab.atomic import TEMPORARY_PATTERN
from seglab.cli import main
from training_helpers import register_tiny_model

COUNT = 40

# `seglab predict` with the tiny model, each mask write slowed down so that the kill lands half way.
WORKER = """\
import sys, time
sys.path.insert(0, sys.argv.pop(1))
from seglab.inference import files
from seglab.models import registry
from training_helpers import TINY_MODEL, tiny_test

registry.MODEL_FACTORIES[TINY_MODEL] = tiny_test
save = files.save_mask_png

def slow_save(*args, **kwargs):
    save(*args, **kwargs)
    time.sleep(0.1)

files.save_mask_png = slow_save
from seglab.cli import main
sys.exit(main())
"""


def masks_in(folder):
    return sorted(folder.glob("img*.png"))


def test_a_run_killed_half_way_is_finished_by_skip_existing(tmp_path, monkeypatch, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    images = tmp_path / "imgs"
    write_images(images, COUNT)
    out = tmp_path / "out"
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    command = [sys.executable, str(worker), str(TESTS_DIR), "predict", str(checkpoint), str(images), "--out",
               str(out), "--batch-size", "4", "--no-progress", "--precision", "fp32"]
    with open(tmp_path / "log.txt", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while len(masks_in(out)) < COUNT // 4 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "log.txt").read_text()
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in masks_in(out)}
    assert COUNT // 4 <= len(before) < COUNT  # killed half way

    register_tiny_model(monkeypatch)
    assert main(["predict", str(checkpoint), str(images), "--out", str(out), "--skip-existing", "--no-progress",
                 "--precision", "fp32"]) == 0
    assert f"predicted {COUNT - len(before)} image(s)" in capsys.readouterr().out
    after = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in masks_in(out)}
    assert len(after) == COUNT and all(after[name] == before[name] for name in before)  # kept, not rewritten
    assert not list(out.rglob(TEMPORARY_PATTERN))  # what the kill left mid-write was cleaned up
    reference = tmp_path / "reference"
    assert main(["predict", str(checkpoint), str(images), "--out", str(reference), "--no-progress",
                 "--precision", "fp32"]) == 0
    for path in masks_in(out):
        with Image.open(path) as mask:
            mask.load()  # a truncated file fails here
            assert mask.mode == "P"
            assert np.array_equal(np.array(mask), np.array(Image.open(reference / path.name)))
