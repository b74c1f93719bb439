"""Training on Lightning: config, LightningModule, DataModule, losses, schedules, callbacks, checkpoints.

    from seglab.training import load_config, train
    result = train(load_config("configs/shapes_deeplabv3plus_xception41.yaml", ["max_epochs=5"]))

Names are imported on first use, so that `seglab.training.config` can be read without importing Lightning.
"""

from __future__ import annotations

from seglab.lazy import lazy_exports

_EXPORTS = {
    "SegmentationLightningModule": "module",
    "TrainConfig": "config",
    "TrainResult": "run",
    "load_config": "config",
    "make_config": "config",
    "resume": "run",
    "save_config": "config",
    "train": "run",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
