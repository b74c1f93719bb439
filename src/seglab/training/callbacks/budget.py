"""`max_minutes`: a wall-clock training budget that ends with a validation of the weights it ends with."""

from __future__ import annotations

import datetime
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer


class TimeBudget(Timer):
    """Lightning's Timer (what the Trainer's `max_time` builds) for `max_minutes`, checked after every step, which
    also validates the weights the budget ends with.

    Not `Trainer(max_time=...)` alone: Lightning validates a stop request only in an epoch that validates anyway
    (`check_val_every_n_epoch`), so a budget that ran out in between would leave best.ckpt at an older validation,
    although the schedule has by then brought the learning rate down to its end, where the weights are usually
    best. The Timer's public `time_elapsed`/`time_remaining` are also what a time-based schedule reads, and its
    state travels in the checkpoint, so a resumed run spends only what is left.
    """

    def __init__(self, minutes: float) -> None:
        super().__init__(duration=datetime.timedelta(minutes=minutes), interval="step")
        self._every_n_epochs: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, *args, **kwargs)  # the Timer's check: sets trainer.should_stop
        if trainer.should_stop and trainer.state.fn == "fit" and trainer.enable_validation \
                and self._every_n_epochs is None and trainer.check_val_every_n_epoch not in (None, 1):
            # Lightning has no hook that asks for one more validation, so this epoch is made a validating one
            # through the Trainer's own setting (checked after this hook, as of Lightning 2.4-2.6: pyproject pins
            # the range). It is put back before the checkpoints are written (they run after every other
            # callback), since Lightning's resume reads the setting to place itself in the epoch.
            self._every_n_epochs = trainer.check_val_every_n_epoch
            trainer.check_val_every_n_epoch = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._every_n_epochs is not None:
            trainer.check_val_every_n_epoch, self._every_n_epochs = self._every_n_epochs, None
