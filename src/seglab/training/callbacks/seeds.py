"""One seed per (run seed, epoch, rank): the data order and every epoch's random numbers follow where training is,
not how the process got there, so a resumed run continues exactly."""

from __future__ import annotations

import random

import lightning.pytorch as pl
import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of `epoch` of a run seeded with `seed`, on process `rank`: the one formula behind the epoch's
    shuffle (`seglab.training.datamodule.EpochSeededSampler`) and its random numbers (`EpochSeeds`)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**32


class EpochSeeds(pl.Callback):
    """Re-seeds torch, numpy and Python at the start of every training epoch from (seed, epoch, rank).

    The random numbers an epoch draws (augmentation, dropout) then depend only on where training is, not on
    how the process got there, so a run resumed from a checkpoint continues exactly. Storing the generator
    state in the checkpoint is not enough: Lightning draws from it between saving and the next epoch in an
    order that differs between an uninterrupted and a resumed run (dataloader iterators are re-created).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device
