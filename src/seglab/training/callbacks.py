"""Callbacks: throughput on the progress bar, the per-epoch history (metrics.csv + curves PNG), RNG state."""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch


class Throughput(pl.Callback):
    """Logs training images/s (all ranks together), shown on the progress bar next to the loss and ETA."""

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


class EpochHistory(pl.Callback):
    """One row per validation: epoch, step, train loss, val metrics, learning rate, images seen and time.

    Rank 0 rewrites `metrics.csv` and the training-curves PNG after every validation. The rows are part of
    the checkpoint, so a resumed run continues the same file.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, float]] = []
        self._loss_sum = 0.0
        self._loss_count = 0
        self._images = 0
        self._elapsed = 0.0
        self._started: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        if self.rows:
            self._images = int(self.rows[-1]["images_seen"])
            self._elapsed = self.rows[-1]["elapsed_s"]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._loss_sum += float(loss.detach())
        self._loss_count += 1
        self._images += len(batch[0]) * trainer.world_size

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        now = time.perf_counter()
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "images_seen": self._images,
            "elapsed_s": round(self._elapsed + now - (self._started or now), 3),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "train_loss": self._loss_sum / max(1, self._loss_count),
        }
        for key, value in sorted(metrics.items()):
            if key.startswith("val/"):
                row[key.replace("/", "_")] = float(value)
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        from seglab.evaluation.plots import plot_training_curves

        self.run_dir.mkdir(parents=True, exist_ok=True)
        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]
        with open(self.run_dir / "metrics.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        plot_training_curves(self.rows, self.run_dir / "training_curves.png")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]


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
        seed = (self.seed * 1_000_003 + trainer.current_epoch * 10_007 + trainer.global_rank) % 2**32
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device
