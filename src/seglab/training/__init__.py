"""Training on Lightning: config, LightningModule, DataModule, losses, schedules, callbacks, checkpoints.

    from seglab.training import load_config, train
    result = train(load_config("configs/shapes_deeplabv3plus_xception41.yaml", ["max_epochs=5"]))

Names are imported on first use, so that `seglab.training.config` can be read without importing Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.lazy import lazy_exports

# Editors and type checkers read the names here; at run time `__getattr__` imports each one on first use.
if TYPE_CHECKING:
    from seglab.training.config import TrainConfig as TrainConfig
    from seglab.training.config import load_config as load_config
    from seglab.training.config import make_config as make_config
    from seglab.training.config import save_config as save_config
    from seglab.training.module import SegmentationLightningModule as SegmentationLightningModule
    from seglab.training.run import TrainResult as TrainResult
    from seglab.training.run import resume as resume
    from seglab.training.run import train as train

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
