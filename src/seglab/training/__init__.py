"""Training on Lightning: config, LightningModule, DataModule, losses, schedules, callbacks, checkpoints.

    from seglab.training import load_config, train
    result = train(load_config("configs/shapes_deeplabv3plus_xception41.yaml", ["max_epochs=5"]))
"""

from seglab.training.checkpoints import load_checkpoint, load_trained_module
from seglab.training.config import TrainConfig, load_config, make_config, save_config
from seglab.training.module import SegmentationModule
from seglab.training.run import TrainResult, resume, train

__all__ = [
    "SegmentationModule",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "load_config",
    "load_trained_module",
    "make_config",
    "resume",
    "save_config",
    "train",
]
