"""`seglab train` / `seglab demo` end to end, and DDP with two CPU processes (gloo)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from data_fixtures import TESTS_DIR
from seglab.cli import main
from seglab.data import ShapesDataset
from seglab.evaluation.scores import scores_from_confusion
from seglab.inference.predictor import predict_logits
from training_helpers import register_tiny_model, score_as_the_ranks

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


def test_demo_runs_end_to_end_scoring_the_test_split_once(tmp_path, capsys, monkeypatch):
    from seglab.evaluation import checkpoint as checkpoint_module
    from seglab.evaluation import plots as plots_module

    scored_splits, reads = [], []
    evaluate, read = checkpoint_module.evaluate, torch.load

    def counting_evaluate(predictor, dataset, **options):
        scored_splits.append(dataset.split)
        return evaluate(predictor, dataset, **options)

    def counting_read(path, *args, **options):
        reads.append(Path(getattr(path, "name", path)).name)  # a path, or the open file seglab hashed and loads
        return read(path, *args, **options)

    monkeypatch.setattr(checkpoint_module, "evaluate", counting_evaluate)
    monkeypatch.setattr(torch, "load", counting_read)
    grid_truths = []
    draw_grid = plots_module.save_prediction_grid

    def recording_grid(images, predictions, truths, *args, **options):
        grid_truths.append(truths)
        return draw_grid(images, predictions, truths, *args, **options)

    monkeypatch.setattr(plots_module, "save_prediction_grid", recording_grid)
    code = main(["demo", "--minutes", "0.1", "--runs-dir", str(tmp_path), "--set", "image_size=32", "batch_size=4",
                 "limit_train_batches=3", "val_length=8", "precision=32-true", "progress_bar=false"])
    assert code == 0
    # One pass over the test split gives the scores, the masks, the grid and the report's test figures; the
    # report scores the val split (which training's test evaluation did not); best.ckpt is read once.
    assert scored_splits == ["test", "val"]
    assert reads.count("best.ckpt") == 1
    out = capsys.readouterr().out
    assert "mIoU" in out and "pixel accuracy" in out
    assert any(line.split()[:1] == ["triangle"] for line in out.splitlines())  # the per-class table
    results = tmp_path / "demo" / "results"
    masks = sorted(results.glob("[0-9][0-9][0-9].png"))
    assert len(masks) == 100  # the whole test split
    assert np.array(Image.open(masks[0])).shape == (32, 32) and np.array(Image.open(masks[0])).max() <= 3
    grid = Image.open(results / "grid.png")  # 8 triplets of 32 px in columns of 4, titles and legend
    assert grid.size[0] > 2 * 3 * 32 and grid.size[1] > 4 * 32
    # Its images are spread over the test split (first and last included), not its first eight.
    spread = [0, 14, 28, 42, 57, 71, 85, 99]
    assert torch.equal(grid_truths[0], torch.stack([ShapesDataset("test", size=32, seed=0)[i][1] for i in spread]))
    assert (tmp_path / "demo" / "report.html").stat().st_size > 50_000
    assert (tmp_path / "demo" / "val_samples.png").is_file()
    assert (tmp_path / "demo" / "checkpoints" / "best.ckpt").is_file()
    # Training itself ended by scoring best.ckpt on the test split, as `seglab evaluate` does.
    tested = json.loads((tmp_path / "demo" / "test_metrics.json").read_text())
    assert f"{100 * tested['miou']:6.2f}" in out and tested["images"] == 100
    assert (tmp_path / "demo" / "evaluate" / "test" / "confusion_matrix.png").is_file()
    # The saved masks are the predictions that were scored.
    with open(tmp_path / "demo" / "evaluate" / "test" / "per_image.csv", newline="") as file:
        per_image = list(csv.DictReader(file))
    first = ShapesDataset("test", size=32, seed=0)[0][1].numpy()
    predicted = np.array(Image.open(masks[0]))
    accuracy = float(((predicted == first) & (first != 255)).sum() / (first != 255).sum())
    assert accuracy == pytest.approx(float(per_image[0]["pixel_accuracy"]), abs=1e-6)


DDP_SCRIPT = """\
import hashlib, json, os, sys
from pathlib import Path

sys.path.insert(0, sys.argv[2])  # the tests folder, for the tiny model

from lightning.pytorch import Callback

from seglab.models import registry
from seglab.training import checkpoints
from seglab.training.config import make_config
from seglab.training.run import train
from training_helpers import TINY_MODEL, tiny_test

registry.MODEL_FACTORIES[TINY_MODEL] = tiny_test
out = Path(sys.argv[1])
rank = int(os.environ.get("LOCAL_RANK", "0"))
original = checkpoints.save_atomically


def recording(checkpoint, path):
    with open(out / f"saves_rank{rank}.txt", "a") as file:
        file.write(Path(path).name + "\\n")
    original(checkpoint, path)


checkpoints.save_atomically = recording


def digest(image):
    return hashlib.sha256(image.cpu().numpy().tobytes()).hexdigest()


class Record(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.train_images = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train_images += [digest(image) for image in batch[0]]

    def on_validation_epoch_start(self, trainer, pl_module):
        self.val_images = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val_images += [digest(image) for image in batch[0]]

    def on_validation_epoch_end(self, trainer, pl_module):
        # Callbacks run before the module's hook, which logs the scores and resets the matrix.
        confusion = pl_module.val_metrics.confusion
        self.local = confusion.confmat.tolist()  # this rank's own counts
        self.gathered = confusion.compute().tolist()  # gathered from every rank

    def on_validation_end(self, trainer, pl_module):
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        values.update(world_size=trainer.world_size, train_images=self.train_images, val_images=self.val_images,
                      local=self.local, gathered=self.gathered)
        with open(out / f"val_rank{trainer.global_rank}.jsonl", "a") as file:
            file.write(json.dumps(values) + "\\n")


# 5 validation images on 2 ranks: shards of 3 and 2 (unless argv[3], JSON, overrides settings).
config = make_config(dict(dataset="shapes", image_size=32, train_length=16, val_length=5, batch_size=2,
                          model=TINY_MODEL, precision="32-true", progress_bar=False, max_epochs=2, logger="csv",
                          test_after_training=False, runs_dir=str(out), name="ddp", devices=2, accelerator="cpu",
                          strategy="ddp") | (json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
train(config, extra_callbacks=[Record()])
"""


def test_ddp_ranks_score_disjoint_shards_gathered_into_the_one_process_scores(tmp_path, monkeypatch):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(TESTS_DIR)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [[json.loads(line) for line in (tmp_path / f"val_rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # one validation per epoch on each rank
    val = ShapesDataset("val", size=32, length=5)
    every_val_image = [hashlib.sha256(val[i][0].numpy().tobytes()).hexdigest() for i in range(5)]
    for mine, theirs in zip(*ranks, strict=True):
        assert mine["world_size"] == 2
        # Training: each rank its own half of the 16 images.
        assert len(set(mine["train_images"])) == len(set(theirs["train_images"])) == 8
        assert not set(mine["train_images"]) & set(theirs["train_images"])
        # Validation: shards of 3 and 2, every image on exactly one rank (none dropped, none padded in twice).
        assert sorted(len(r["val_images"]) for r in (mine, theirs)) == [2, 3]
        assert sorted(mine["val_images"] + theirs["val_images"]) == sorted(every_val_image)
        local = [torch.tensor(r["local"]) for r in (mine, theirs)]
        assert all(matrix.sum() > 0 for matrix in local)
        assert torch.equal(torch.tensor(mine["gathered"]), local[0] + local[1])
        assert torch.equal(torch.tensor(theirs["gathered"]), local[0] + local[1])
        assert int(local[0].sum() + local[1].sum()) == 5 * 32 * 32  # every pixel of the 5 images, once
        assert mine.keys() == theirs.keys() and "val/miou" in mine
        for key in mine:
            if key.startswith("val/"):
                assert mine[key] == pytest.approx(theirs[key], abs=1e-7), key
    # One process scoring the 5 images with the final weights (in the ranks' batches) finds the matrix and the
    # scores the ranks logged.
    register_tiny_model(monkeypatch)
    one_process, logits, masks = score_as_the_ranks(tmp_path / "ddp" / "checkpoints" / "last.ckpt", val,
                                                    [[0, 2], [4], [1, 3]])
    final = ranks[0][-1]
    assert torch.equal(torch.tensor(final["gathered"]), one_process)
    assert final["val/miou"] == pytest.approx(float(scores_from_confusion(one_process)["miou"]), abs=1e-6)
    assert final["val/loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, masks)), abs=1e-5)
    saved = (tmp_path / "saves_rank0.txt").read_text().split()
    assert "best.ckpt" in saved and "last.ckpt" in saved
    assert not (tmp_path / "saves_rank1.txt").exists()
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("name", [".", "..", "/", "../x", "a/b", "a\\\\b"])
def test_demo_refuses_a_run_name_that_is_not_a_plain_folder_name_and_deletes_nothing(tmp_path, monkeypatch, capsys,
                                                                                       name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    keep = [tmp_path / "notes.txt", tmp_path / "runs" / "other.txt"]
    for path in keep:
        path.write_text("keep me")
    assert main(["demo", "--minutes", "0.01", "--set", f"name={name}"]) == 2
    assert "plain folder name" in capsys.readouterr().err
    assert all(path.read_text() == "keep me" for path in keep)


def test_overwrite_refuses_a_folder_that_is_not_a_seglab_run(tmp_path, capsys):
    stranger = tmp_path / "runs" / "photos"
    stranger.mkdir(parents=True)
    (stranger / "holiday.jpg").write_bytes(b"not a run")
    code = main(["demo", "--minutes", "0.01", "--runs-dir", str(tmp_path / "runs"), "--set", "name=photos",
                 "image_size=32", "precision=32-true", "progress_bar=false"])
    assert code == 2
    assert "not a seglab run folder" in capsys.readouterr().err
    assert (stranger / "holiday.jpg").read_bytes() == b"not a run"


def test_ddp_with_fewer_validation_images_than_ranks_neither_hangs_nor_counts_twice(tmp_path, monkeypatch):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    # 1 validation image on 2 ranks: rank 1's shard is empty.
    overrides = json.dumps({"val_length": 1, "train_length": 4, "max_epochs": 1})
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(TESTS_DIR), overrides],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # both ranks: the one the launcher started is in the same group
        process.communicate()
        pytest.fail("DDP training with an empty validation shard hung")
    assert process.returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / f"val_rank{r}.jsonl").read_text()) for r in (0, 1)]
    local = [torch.tensor(rank["local"]) for rank in ranks]
    assert int(local[0].sum()) == 32 * 32 and int(local[1].sum()) == 0  # rank 1 scored nothing
    for rank in ranks:
        assert torch.equal(torch.tensor(rank["gathered"]), local[0])  # the one image, counted once
    # The loss is that one image's, not averaged with anything from rank 1.
    register_tiny_model(monkeypatch)
    predictor = seglab.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", device="cpu", precision="fp32")
    image, mask = ShapesDataset("val", size=32, length=1)[0]
    with torch.no_grad():
        logits = predict_logits(predictor.model, image[None], predictor.spec)
    assert ranks[0]["val/loss"] == ranks[1]["val/loss"]
    assert ranks[0]["val/loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, mask[None])),
                                                 abs=1e-5)
