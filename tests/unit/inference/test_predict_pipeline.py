"""`predict_files`'s pipeline: decoding and writing threads beside the engine give the same masks as one thread,
and the time of each stage is measured."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from predict_helpers import write_images, write_tiny_checkpoint
from seglab.errors import ConfigError
from seglab.inference.files import collect_inputs, predict_files
from seglab.inference.predictor import calls_for_folder, image_tensor
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


def test_concurrent_engine_calls_write_and_report_in_input_order(tmp_path, monkeypatch):
    """Two engine calls in flight, the first image's the slowest: outputs still come out in input order and
    equal one call at a time's; an image too big for memory fails alone."""
    register_tiny_model(monkeypatch)
    predictor = seglab.load(write_tiny_checkpoint(tmp_path / "tiny.ckpt"), precision="fp32", batch_size=1)
    write_images(tmp_path / "imgs", 6, size=40)
    items, _ = collect_inputs([tmp_path / "imgs"])
    scores, running, most_at_once = predictor.scores, [], []
    first, too_big = (image_tensor(item.path) for item in (items[0], items[3]))

    threads, engine_threads = torch.get_num_threads(), set()

    def uneven_scores(images, **options):
        running.append(1)
        most_at_once.append(len(running))
        engine_threads.add(torch.get_num_threads())
        try:
            time.sleep(0.3 if torch.equal(images[0], first) else 0.0)  # the first image finishes last
            if torch.equal(images[0], too_big):
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
            return scores(images, **options)
        finally:
            running.pop()

    monkeypatch.setattr(predictor, "scores", uneven_scores)
    monkeypatch.setattr(predictor, "concurrent_calls", 2)
    written = []
    summary = predict_files(predictor, items, tmp_path / "out", on_written=lambda path, *_: written.append(path))
    assert max(most_at_once) == 2
    assert engine_threads == {max(1, threads // 2)} and torch.get_num_threads() == threads  # shared, then restored
    assert [problem.kind for problem in summary.failures] == ["out-of-memory"]
    failed = summary.failures[0].path
    assert failed == items[3].path and written == [item.path for item in items if item.path != failed]
    for item in items:
        if item.path != failed:
            mask = np.array(Image.open(tmp_path / "out" / f"{item.name}.png"))
            assert np.array_equal(mask, predictor.predict(item.path))


def test_concurrent_calls_share_a_cpus_cores_only_over_enough_images(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    assert seglab.load(checkpoint, concurrent_calls=2).concurrent_calls == 2
    for refused in ({"concurrent_calls": 0}, {"concurrent_calls": 2, "compile": True}):
        with pytest.raises(ConfigError, match="calls share a CPU's cores"):
            seglab.load(checkpoint, **refused)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert [calls_for_folder(count) for count in (1, 7, 8, 1000)] == [1, 1, 4, 4]
