"""What a run leaves to look at after every validation: the per-epoch history (metrics.csv and the training-curves
PNG) and a grid of validation predictions."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from seglab.atomic import write_atomically
from seglab.inference.predictor import class_map
from seglab.inference.spec import InferenceSpec


class EpochHistory(pl.Callback):
    """One row per validation: epoch, step, train loss, val metrics, learning rate, images seen and time.

    Rank 0 rewrites `metrics.csv` and the training-curves PNG after every validation. The rows are part of
    the checkpoint, so a resumed run continues the same file.
    """

    # Not Lightning's CSVLogger + LearningRateMonitor (`logger: csv` writes CSVLogger's file to <run>/csv/): they
    # write a row per logging event (training steps and validations), columns sorted by name, without images seen
    # or elapsed time. metrics.csv keeps one row per validation with `epoch` first, restored from the checkpoint
    # on resume, and the same rows are `TrainResult.history` and the curves PNG.

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

        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]

        def write_csv(temporary: Path) -> None:
            with open(temporary, "w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)

        write_atomically(self.run_dir / "metrics.csv", write_csv)
        plot_training_curves(self.rows, self.run_dir / "training_curves.png")  # atomic itself

    def state_dict(self) -> dict[str, Any]:
        # The image count runs on past the last row when a signal saves the run mid-epoch.
        return {"rows": [dict(row) for row in self.rows], "images_seen": self._images}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]
        # Checkpoints written before the count was stored: it stood at the last row.
        self._images = int(state_dict.get("images_seen", self.rows[-1]["images_seen"] if self.rows else 0))


class ValidationSamples(pl.Callback):
    """After every validation, `count` validation images spread evenly over the split (`spread_indices`) with
    their prediction and truth.

    Rank 0 writes the grid (captioned with each image's mIoU) to `val_samples.png` in the run folder and logs
    the same picture to TensorBoard as "val/samples". The images are the same every time, so one sees the
    model learn them from one validation to the next.
    """

    def __init__(self, run_dir: str | Path, count: int = 8) -> None:
        self.run_dir = Path(run_dir)
        self.count = count
        self._samples: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.indices: list[int] = []  # the validation items shown, by index in the split

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        if self._samples is None:  # read once: the same images at every validation
            datamodule = trainer.datamodule  # pyright: ignore[reportAttributeAccessIssue] (set by Lightning's connectors)
            val = getattr(datamodule, "datasets", {}).get("val")
            from seglab.evaluation.plots import spread_indices

            self.indices = [] if val is None else spread_indices(len(val), self.count)
            self._samples = [] if val is None else [val[i] for i in self.indices]
        if not self._samples:
            return
        with trainer.precision_plugin.val_step_context():
            predictions = self.predict(pl_module, [image for image, _ in self._samples])
        grid = self.draw(pl_module, predictions)
        write_atomically(self.run_dir / "val_samples.png",
                         lambda temporary: Image.fromarray(grid).save(temporary, format="PNG"))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/samples", grid, trainer.global_step, dataformats="HWC")

    @torch.no_grad()
    def predict(self, pl_module: pl.LightningModule, images: list[torch.Tensor]) -> list[np.ndarray]:
        """Class maps for `images` (each (3, H, W) in [0, 1]), one batch when they share a size."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            same_size = len({tuple(image.shape) for image in images}) == 1
            batches = [torch.stack(images)] if same_size else [image[None] for image in images]
            return [labels for batch in batches
                    for labels in class_map(pl_module(batch.to(pl_module.device)), dim=1).cpu().numpy()]
        finally:
            pl_module.train(was_training)

    def draw(self, pl_module: pl.LightningModule, predictions: list[np.ndarray]) -> np.ndarray:
        from seglab.evaluation.plots import thumbnail, triplet_grid
        from seglab.evaluation.scores import confusion_from_labels, image_scores

        spec = pl_module.spec
        assert isinstance(spec, InferenceSpec)  # (Module's `__getattr__` types attributes as tensors or modules)
        rows = []
        for index, (image, mask), prediction in zip(self.indices, self._samples or [], predictions, strict=True):
            truth = mask.numpy()
            scores = image_scores(confusion_from_labels(prediction, truth, spec.num_classes, spec.ignore_index))
            ious = [iou for iou in scores["iou_per_class"] if not math.isnan(iou)]  # classes in prediction or truth
            miou = f"{sum(ious) / len(ious):.2f}" if ious else "-"
            rows.append((*thumbnail(image, prediction, truth), f"val {index}: mIoU {miou}"))
        return triplet_grid(rows, spec.palette, spec.class_names)
