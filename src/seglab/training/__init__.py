"""Training on Lightning: config, LightningModule, DataModule, losses, schedules, callbacks, checkpoints.

    from seglab.training import load_config, train
    result = train(load_config("configs/shapes_deeplabv3plus_xception41.yaml", ["max_epochs=5"]))

`training_step(model, images, masks, loss, optimizer, precision=...)` is one optimiser step without Lightning,
computing the loss as the LightningModule's `training_step` does; the benchmarks train and time with it.

Names are imported on first use, so that `seglab.training.config` can be read without importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SegmentationLightningModule": "seglab.training.module",
    "TrainConfig": "seglab.training.config",
    "TrainResult": "seglab.training.run",
    "load_checkpoint": "seglab.training.checkpoints",
    "load_config": "seglab.training.config",
    "make_config": "seglab.training.config",
    "resume": "seglab.training.run",
    "save_config": "seglab.training.config",
    "train": "seglab.training.run",
    "training_loss": "seglab.training.step",
    "training_step": "seglab.training.step",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'seglab.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
