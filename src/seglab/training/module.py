"""The LightningModule: model + loss + metrics wired to Lightning's steps; nothing else lives here.

Validation and test predict through `seglab.inference.predict_logits` with the module's `InferenceSpec`, the
same function and spec `seglab.load` gives a Predictor, so a checkpoint is used exactly as it was scored.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer

from seglab.evaluation.metrics import SegmentationMetrics
from seglab.inference.predictor import predict_logits, prepare_inputs
from seglab.inference.spec import SPEC_KEY, spec_from_config
from seglab.training.config import TrainConfig, make_config
from seglab.training.losses import build_loss
from seglab.training.optim import build_optimizer, build_scheduler


class SegmentationModule(pl.LightningModule):
    """Trains `config.model` with `config.loss`; logs val/test pixel accuracy, mean class accuracy and mIoU.

    Its hyper-parameters are plain dicts and lists (the resolved config, class names, class weights, palette),
    so a checkpoint loads with `torch.load(weights_only=True)`; `on_save_checkpoint` adds the `InferenceSpec`.
    """

    def __init__(self, config: dict[str, Any], num_classes: int, class_names: list[str],
                 class_weights: list[float] | None = None, model: torch.nn.Module | None = None,
                 palette: list[list[int]] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.config: TrainConfig = make_config(config)
        self.spec = spec_from_config(self.config, num_classes=num_classes, class_names=class_names, palette=palette)
        if model is None:
            from seglab.models import build_model

            model = build_model(self.config.model, num_classes=num_classes, **self.config.model_options())
        self.model = model
        if self.config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        cfg = self.config
        self.loss = build_loss(cfg.loss, ignore_index=cfg.ignore_index, class_weights=class_weights,
                               focal_gamma=cfg.focal_gamma)
        self.val_metrics = SegmentationMetrics(num_classes, cfg.ignore_index)
        self.test_metrics = SegmentationMetrics(num_classes, cfg.ignore_index)
        self.augmentation = None
        if cfg.augment:
            from seglab.data.transforms import SegmentationAugmentation

            self.augmentation = SegmentationAugmentation(
                scale=tuple(cfg.scale) if cfg.scale else None, degrees=cfg.degrees, hflip=cfg.hflip, vflip=cfg.vflip,
                color_jitter=tuple(cfg.color_jitter) if cfg.color_jitter else None, ignore_index=cfg.ignore_index)

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the size of `images` (in [0, 1], not normalised), predicted as `seglab.load` predicts."""
        return predict_logits(self.model, images, self.spec)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[SPEC_KEY] = self.spec.to_dict()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Augmentation and normalisation of training batches run on the device, batched, instead of per item
        # in the loader. Validation and test batches stay in [0, 1]: `forward` prepares them.
        images, masks = batch
        if not self.training:
            return images, masks
        if self.augmentation is not None:
            images, masks = self.augmentation(images, masks)
        if self.config.progressive_resize and self._trainer is not None:
            images, masks = self._resize_for_progress(images, masks)
        return prepare_inputs(images, self.spec), masks

    def _resize_for_progress(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Progressive resizing: early steps on smaller images are several times cheaper and teach the same
        # shapes; the last share of training runs at full size so the model ends adapted to it.
        side = self.config.training_side(self._progress(self.trainer.global_step))
        height, width = images.shape[-2:]
        if side is None or side >= min(height, width):
            return images, masks
        size = (max(1, round(height * side / min(height, width))), max(1, round(width * side / min(height, width))))
        images = F.interpolate(images, size=size, mode="area")
        masks = F.interpolate(masks[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()
        return images, masks

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        loss = self.loss(self.model(images), masks)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate_step(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate_step(batch, "test", self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_scores("test", self.test_metrics)

    def _evaluate_step(self, batch: Any, stage: str, metrics: SegmentationMetrics) -> None:
        images, masks = batch
        logits = predict_logits(self.model, images, self.spec, tile=self.config.eval_tile)
        self.log(f"{stage}/loss", self.loss(logits, masks), sync_dist=True, batch_size=len(images))
        metrics.update(logits, masks)

    def _log_scores(self, stage: str, metrics: SegmentationMetrics) -> None:
        # compute() gathers the confusion matrix from every DDP rank, so all ranks log identical values.
        scores = metrics.compute()
        # sync_dist averages identical values: it only tells Lightning the value is already global.
        self.log(f"{stage}/miou", scores["miou"].float(), prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/pixel_accuracy", scores["pixel_accuracy"].float(), sync_dist=True)
        self.log(f"{stage}/mean_class_accuracy", scores["mean_class_accuracy"].float(), sync_dist=True)
        for name, iou in zip(self.class_names, scores["iou_per_class"], strict=True):
            self.log(f"{stage}/iou_{name}", iou.float(), sync_dist=True)
        metrics.reset()

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.config, self.parameters())
        scheduler = build_scheduler(self.config, optimizer, self._progress)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _progress(self, step: int) -> float:
        """Share of training done: by steps when the run has a step/epoch limit, else by the time budget."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        total = trainer.estimated_stepping_batches
        if total != float("inf"):
            return step / max(1, total)
        timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
        elapsed = timer.time_elapsed("train")
        return elapsed / max(1e-9, elapsed + (timer.time_remaining("train") or 0.0))
