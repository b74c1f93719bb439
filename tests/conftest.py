"""Shared fixtures: one small model trained once per test session, for the inference and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# About a minute of training on 64 px shapes (bf16 where the CPU runs it, val mIoU about 0.58): a model that
# tells shapes from background, which the tiling and test-time augmentation checks need (an untrained model's
# flat output would pass them trivially).
TRAINED_RECIPE = {
    "name": "trained", "dataset": "shapes", "image_size": 64, "train_length": 512, "val_length": 16,
    "batch_size": 16, "model": "deeplabv3plus_xception41", "output_stride": 16, "zero_init_residual": True,
    "loss": "ce_dice", "optimizer": "adamw", "lr": 2e-2, "scheduler": "onecycle", "max_epochs": 8,
    "precision": "auto", "progress_bar": False, "log_every_n_steps": 1, "test_after_training": False,
}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """The run folder of the session's small trained model (checkpoints/best.ckpt, config.yaml, ...)."""
    from seglab.training.config import make_config
    from seglab.training.run import train

    runs = tmp_path_factory.mktemp("runs")
    result = train(make_config(TRAINED_RECIPE, runs_dir=str(runs)))
    return result.run_dir


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e/ (subprocesses, faults, several processes, whole CLI runs) is `slow`, and so is
    every test that needs the session's trained model (a minute of training before the first of them):
    `pytest -m "not slow"` is the fast loop a developer runs; CI runs everything."""
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if e2e in Path(item.fspath).parents or "trained_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
