"""What the progress bar shows: a smoothed training throughput and the epoch (with its total only where the run
has an epoch limit)."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar


class Throughput(pl.Callback):
    """Logs training images/s (all ranks together), shown on the progress bar next to the loss and ETA."""

    # Not Lightning's ThroughputMonitor: it writes samples/s to the loggers only, every log_every_n_steps, never
    # to the progress bar, and synchronises CUDA after every batch to time it; this is a smoothed rate for the bar.

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.rate: float | None = None
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Restart the clock after validation so that its time does not count as slow training steps.
        self._last = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            rate = len(batch[0]) * trainer.world_size / max(now - self._last, 1e-9)
            self.rate = rate if self.rate is None else self.smoothing * self.rate + (1 - self.smoothing) * rate
            pl_module.log("img/s", self.rate, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True)
        self._last = now


class EpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, with "Epoch n/last" only where the run has an epoch limit ("Epoch n" otherwise).

    Chosen here rather than left to Lightning, which picks its rich bar whenever `rich` happens to be installed,
    and that bar writes "Epoch 8/-2" (max_epochs - 1) for a run limited by steps or minutes.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}/{trainer.max_epochs - 1}")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                    ) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version number, not a measurement
        return metrics
