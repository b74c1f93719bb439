"""An evaluation of image/mask folders never passes for a split of the run: `seglab evaluate RUN --images X --masks
Y` writes `<run>/evaluate/folder-<name>/`, metrics.json says which split (if any) it scored, and the report uses
only evaluations whose metrics.json names the split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from predict_helpers import write_images, write_tiny_checkpoint
from seglab.evaluation import html_report
from seglab.evaluation.checkpoint import evaluate_checkpoint
from seglab.evaluation.html_report import ensure_evaluations
from training_helpers import register_tiny_model


def folders_named_test(root: Path) -> tuple[Path, Path]:
    """Images and masks in folders called `test`, as a user's own test set often is."""
    images, masks = root / "mine" / "test", root / "mine" / "masks" / "test"
    write_images(images, 2, size=16)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 4, (16, 16), dtype=np.uint8)).save(masks / f"img{index}.png")
    return images, masks


def tiny_run(folder: Path) -> Path:
    write_tiny_checkpoint(folder / "checkpoints" / "best.ckpt")
    (folder / "config.yaml").write_text("model: tiny_test\n")
    return folder


def test_a_folder_evaluation_of_a_run_is_written_under_folder_name_never_under_a_split(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    run = tiny_run(tmp_path / "run")
    images, masks = folders_named_test(tmp_path)
    result = evaluate_checkpoint(run, images=images, masks=masks, batch_size=2)
    assert result.out == run / "evaluate" / "folder-test"
    assert not (run / "evaluate" / "test").exists()
    written = json.loads((result.out / "metrics.json").read_text())
    assert written["split"] is None and written["data"] == f"folder {images}"


class FourPairs:
    """Four 16 px image/mask pairs: the run's test split in miniature."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(3)
        self.images = torch.rand(4, 3, 16, 16, generator=generator)
        self.masks = torch.randint(0, 4, (4, 16, 16), generator=generator)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        return self.images[index], self.masks[index]


def test_the_report_uses_only_evaluations_whose_metrics_name_the_split(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    run = tiny_run(tmp_path / "run")
    checkpoint = run / "checkpoints" / "best.ckpt"
    identity = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # What an older seglab wrote for `seglab evaluate RUN --images some/test ...`: the right checkpoint, but a
    # folder's scores, in the split's place.
    planted = run / "evaluate" / "test" / "metrics.json"
    planted.parent.mkdir(parents=True)
    planted.write_text(json.dumps({"checkpoint_sha256": identity, "data": "folder some/test", "miou": 0.999}))
    found = ensure_evaluations(run, seglab.load(checkpoint), {"test": FourPairs()}, checkpoint, identity)
    assert found["test"]["split"] == "test" and found["test"]["data"] == "test split"
    assert found["test"]["miou"] != 0.999 and found["test"]["images"] == 4
    assert json.loads(planted.read_text())["split"] == "test"  # scored again, in its place
    # Scored once, it stands: a second report does not score it again.
    monkeypatch.setattr(html_report, "evaluate_and_write", lambda *args, **kwargs: pytest.fail("scored again"))
    again = ensure_evaluations(run, seglab.load(checkpoint), {"test": FourPairs()}, checkpoint, identity)
    assert again["test"] == json.loads(planted.read_text())
