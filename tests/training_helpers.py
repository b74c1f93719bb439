"""Helpers for the training tests: a tiny registered model, run comparisons, and `seglab` with that model.

`python tests/training_helpers.py train CONFIG.yaml` is the real command line with one more model,
`tiny_test`, registered: a subprocess training then costs little more than its start-up, and its checkpoints
are kilobytes (DeepLabV3+'s last.ckpt is 340 MB).
"""

from __future__ import annotations

import collections
import csv
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from seglab.models import registry

TINY_MODEL = "tiny_test"

# `<n>`: the n-th training item each DataLoader worker reads waits (see `pause_loading_in_workers`).
PAUSE_LOADING_VARIABLE = "SEGLAB_TEST_PAUSE_LOADING"

# How close a resumed run must end to an uninterrupted one. On a CPU in fp32 the two are bit-identical (same
# kernels, same order); 1e-6 leaves room for BLAS thread jitter.
RESUME_TOLERANCE = 1e-6

# metrics.csv columns that measure the machine, not the training: wall-clock time.
TIMING_COLUMNS = ("elapsed_s",)


class TinySegmenter(torch.nn.Sequential):
    """conv - batch norm - ReLU - dropout - conv: running statistics and random numbers a resume must restore."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                         torch.nn.Dropout2d(0.2), torch.nn.Conv2d(8, num_classes, 3, padding=1))


def tiny_test(*, num_classes: int) -> TinySegmenter:
    return TinySegmenter(num_classes)


def register_tiny_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes `model: tiny_test` buildable in this test process (undone after the test)."""
    monkeypatch.setitem(registry.MODEL_FACTORIES, TINY_MODEL, tiny_test)


def logged_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Every row of a run's metrics.csv, as numbers, without the timing columns."""
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as file:
        return [{key: float(value) for key, value in row.items() if key not in TIMING_COLUMNS}
                for row in csv.DictReader(file)]


def assert_same_metrics(got: list[dict[str, float]], expected: list[dict[str, float]]) -> None:
    """The same rows with the same columns, every value within RESUME_TOLERANCE (timing columns left out)."""
    got = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in got]
    expected = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in expected]
    assert len(got) == len(expected), (got, expected)
    for index, (row, reference) in enumerate(zip(got, expected, strict=True)):
        assert row.keys() == reference.keys(), index
        for key, value in reference.items():
            assert row[key] == pytest.approx(value, abs=RESUME_TOLERANCE), (index, key, row[key], value)


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """The same state-dict keys, every tensor within RESUME_TOLERANCE."""
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert got[name].shape == tensor.shape, name
        assert torch.allclose(got[name].double(), tensor.double(), rtol=0, atol=RESUME_TOLERANCE), name


def pause_loading_in_workers(call: int, marker: Path) -> None:
    """The `call`-th shapes training item that each DataLoader worker reads writes `marker` and waits until
    `<marker>.go` exists: the main process is then waiting for a batch. A file, not a signal, releases it: the
    workers ignore SIGINT and SIGTERM (`seglab.training.datamodule.ignore_stop_signals`)."""
    from seglab.data.shapes import ShapesDataset

    original = ShapesDataset.__getitem__
    calls: collections.Counter[str] = collections.Counter()  # forked workers count their own calls

    def getitem(self, index):
        if self.split == "train" and torch.utils.data.get_worker_info() is not None:
            calls["train"] += 1
            if calls["train"] == call:
                marker.write_text(f"loading@{call} pid {os.getpid()}\n")
                release, deadline = marker.with_name(marker.name + ".go"), time.monotonic() + 120
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
        return original(self, index)

    ShapesDataset.__getitem__ = getitem


def score_as_the_ranks(checkpoint: Path, dataset, batches: list[list[int]],
                       num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(confusion matrix, logits, masks) of `checkpoint` scored in this one process on `dataset`'s items in
    `batches`, with one thread: the DDP ranks' batches and thread count, since a barely trained model has near-ties
    between classes that another batch size or thread count could tip. Needs `tiny_test` registered."""
    import seglab
    from seglab.inference.predictor import predict_logits

    predictor = seglab.load(checkpoint, device="cpu", precision="fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            logits = torch.cat([predict_logits(predictor.model, torch.stack([dataset[i][0] for i in batch]),
                                               predictor.spec) for batch in batches])
    finally:
        torch.set_num_threads(threads)
    masks = torch.stack([dataset[i][1] for batch in batches for i in batch])
    confusion = torch.bincount(num_classes * masks.flatten() + logits.argmax(1).flatten(),
                               minlength=num_classes ** 2).reshape(num_classes, num_classes)
    return confusion, logits, masks


if __name__ == "__main__":
    registry.MODEL_FACTORIES[TINY_MODEL] = tiny_test
    if os.environ.get(PAUSE_LOADING_VARIABLE):
        pause_loading_in_workers(int(os.environ[PAUSE_LOADING_VARIABLE]), Path(os.environ["SEGLAB_TEST_PAUSE_MARKER"]))
    from seglab.cli import main

    sys.exit(main())
