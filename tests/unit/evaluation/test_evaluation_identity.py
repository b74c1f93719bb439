"""metrics.json names the checkpoint whose weights were scored: the sha256 of the very bytes that were loaded, even
when a resume replaces best.ckpt while the file is being read or scored."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from predict_helpers import write_images, write_tiny_checkpoint
from seglab.evaluation import checkpoint as checkpoint_module
from seglab.evaluation.checkpoint import evaluate_checkpoint
from seglab.inference import loading
from training_helpers import register_tiny_model


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_and_mask_folders(folder: Path) -> tuple[Path, Path]:
    images = folder / "pictures"
    write_images(images, 2, size=16)
    masks = folder / "labels"
    masks.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 4, (16, 16), dtype=np.uint8)).save(masks / f"img{index}.png")
    return images, masks


def replace_with_other_weights(checkpoint: Path) -> None:
    """What `--resume` does to best.ckpt: another model's checkpoint renamed over it (seglab.atomic)."""
    os.replace(write_tiny_checkpoint(checkpoint.with_name("other.ckpt"), seed=1), checkpoint)


@pytest.mark.parametrize("when", ["while-scoring", "while-loading"])
def test_metrics_name_the_bytes_that_were_scored_when_best_ckpt_is_replaced_meanwhile(tmp_path, monkeypatch, when):
    register_tiny_model(monkeypatch)
    run = tmp_path / "run"
    checkpoint = write_tiny_checkpoint(run / "checkpoints" / "best.ckpt", seed=0)
    (run / "config.yaml").write_text("model: tiny_test\n")
    scored = sha256(checkpoint)
    images, masks = image_and_mask_folders(tmp_path)
    if when == "while-scoring":
        evaluate = checkpoint_module.evaluate

        def evaluate_then_replaced(*args, **kwargs):
            replace_with_other_weights(checkpoint)
            return evaluate(*args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "evaluate", evaluate_then_replaced)
    else:
        load = loading.torch.load

        def replaced_then_load(source, *args, **kwargs):
            replace_with_other_weights(checkpoint)  # after seglab opened the file, before torch reads it
            return load(source, *args, **kwargs)

        monkeypatch.setattr(loading.torch, "load", replaced_then_load)
    result = evaluate_checkpoint(run, images=images, masks=masks, out=tmp_path / "out", batch_size=2)
    assert sha256(checkpoint) != scored  # the file was replaced ...
    assert result.metrics["checkpoint_sha256"] == scored  # ... but the scores belong to the bytes that were loaded
    expected = evaluate_checkpoint(write_tiny_checkpoint(tmp_path / "seed0.ckpt", seed=0), images=images,
                                   masks=masks, out=tmp_path / "again", batch_size=2)
    assert result.metrics["per_class"] == expected.metrics["per_class"]  # and the scores are the seed-0 model's
