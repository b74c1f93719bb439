"""`predict_files`'s pipeline: decoding and writing threads beside the engine give the same masks as one thread,
and the time of each stage is measured."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import seglab
from predict_helpers import write_images, write_tiny_checkpoint
from seglab.inference.files import collect_inputs, predict_files
from training_helpers import register_tiny_model


@pytest.mark.parametrize("workers", [1, 3])
def test_threads_give_the_masks_of_one_thread_and_every_stage_is_timed(tmp_path, monkeypatch, workers):
    register_tiny_model(monkeypatch)
    predictor = seglab.load(write_tiny_checkpoint(tmp_path / "tiny.ckpt"), precision="fp32", batch_size=3)
    write_images(tmp_path / "imgs", 7, size=40)
    items, _ = collect_inputs([tmp_path / "imgs"])
    summary = predict_files(predictor, items, tmp_path / "out", workers=workers)
    assert summary.ok and summary.predicted == 7
    for item in items:
        mask = np.array(Image.open(tmp_path / "out" / f"{item.name}.png"))
        assert np.array_equal(mask, predictor.predict(item.path))
    times = summary.times
    assert min(times.decode, times.engine, times.encode, times.write, times.wall) > 0
    assert "ms/image" in times.report(summary.predicted)
