"""`seglab train` / `seglab demo` end to end, and DDP with two CPU processes (gloo)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from seglab.cli import main

TINY_YAML = """\
name: cli
dataset: shapes
image_size: 32
train_length: 16
val_length: 8
batch_size: 4
model: deeplabv3plus_xception41
precision: 32-true
progress_bar: false
max_epochs: 1
"""


def test_train_then_resume_from_the_command_line(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML + f"runs_dir: {tmp_path / 'runs'}\n")
    assert main(["train", str(config), "--set", "lr=2e-3"]) == 0
    assert "best val mIoU" in capsys.readouterr().out
    run = tmp_path / "runs" / "cli"
    assert main(["train", "--resume", str(run), "--set", "max_epochs=2"]) == 0
    with open(run / "metrics.csv", newline="") as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["0", "1"]
    assert main(["train", "--resume", str(run), "--set", "lr=1"]) == 2
    assert "cannot change lr when resuming" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path, capsys):
    code = main(["demo", "--minutes", "0.1", "--runs-dir", str(tmp_path), "--set", "image_size=32", "batch_size=4",
                 "limit_train_batches=3", "val_length=8", "precision=32-true", "progress_bar=false"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "pixel accuracy" in out
    assert any(line.split()[:1] == ["triangle"] for line in out.splitlines())  # the per-class table
    results = tmp_path / "demo" / "results"
    masks = sorted(results.glob("[0-9][0-9][0-9].png"))
    assert len(masks) == 100  # the whole test split
    assert np.array(Image.open(masks[0])).shape == (32, 32) and np.array(Image.open(masks[0])).max() <= 3
    grid = Image.open(results / "grid.png")  # 8 triplets of 32 px in columns of 4, titles and legend
    assert grid.size[0] > 2 * 3 * 32 and grid.size[1] > 4 * 32
    assert (tmp_path / "demo" / "report.html").stat().st_size > 50_000
    assert (tmp_path / "demo" / "val_samples.png").is_file()
    assert (tmp_path / "demo" / "checkpoints" / "best.ckpt").is_file()
    with open(results / "test_metrics.csv", newline="") as file:
        scores = {row["metric"]: float(row["value"]) for row in csv.DictReader(file)}
    assert 0 <= scores["miou"] <= 1 and f"{100 * scores['miou']:6.2f}" in out
    # Training itself ended by scoring best.ckpt on the test split, as `seglab evaluate` does.
    tested = json.loads((tmp_path / "demo" / "test_metrics.json").read_text())
    assert tested["miou"] == pytest.approx(scores["miou"], abs=1e-6) and tested["images"] == 100
    assert (tmp_path / "demo" / "evaluate" / "test" / "confusion_matrix.png").is_file()


DDP_SCRIPT = """\
import json, os, sys
from pathlib import Path

from lightning.pytorch import Callback

from seglab.training import checkpoints
from seglab.training.config import make_config
from seglab.training.run import train

out = Path(sys.argv[1])
rank = int(os.environ.get("LOCAL_RANK", "0"))
original = checkpoints.save_atomically


def recording(checkpoint, path):
    with open(out / f"saves_rank{rank}.txt", "a") as file:
        file.write(Path(path).name + "\\n")
    original(checkpoint, path)


checkpoints.save_atomically = recording


class Record(Callback):
    def on_validation_end(self, trainer, pl_module):
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        values["world_size"] = trainer.world_size
        with open(out / f"val_rank{trainer.global_rank}.jsonl", "a") as file:
            file.write(json.dumps(values) + "\\n")


config = make_config(dict(dataset="shapes", image_size=32, train_length=16, val_length=10, batch_size=2,
                          model="deeplabv3plus_xception41", precision="32-true", progress_bar=False, max_epochs=2,
                          runs_dir=str(out), name="ddp", devices=2, accelerator="cpu", strategy="ddp"))
train(config, extra_callbacks=[Record()])
"""


def test_ddp_two_cpu_processes_agree_and_only_rank_zero_writes(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"val_rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # one validation per epoch on each rank
    for mine, theirs in zip(*ranks, strict=True):
        assert mine["world_size"] == 2
        assert mine.keys() == theirs.keys() and "val/miou" in mine
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-7), key
    saved = (tmp_path / "saves_rank0.txt").read_text().split()
    assert "best.ckpt" in saved and "last.ckpt" in saved
    assert not (tmp_path / "saves_rank1.txt").exists()
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()
