"""The LightningModule: model + loss + metrics wired to Lightning's steps; nothing else lives here.

Validation and test predict through `seglab.inference.predict_logits` with the module's `InferenceSpec`, the
same function and spec `seglab.load` gives a Predictor, so a checkpoint is used exactly as it was scored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torchmetrics import MeanMetric

from seglab.evaluation.metrics import SegmentationMetrics
from seglab.inference.predictor import inference_model, predict_logits, prepare_inputs
from seglab.inference.spec import SPEC_KEY
from seglab.training.config import TrainConfig
from seglab.training.hardware import run_channels_last
from seglab.training.losses import build_loss
from seglab.training.optim import build_optimizer, build_scheduler


class SegmentationLightningModule(pl.LightningModule):
    """Trains `config.model` with `config.loss`; logs val/test pixel accuracy, mean class accuracy and mIoU.

    `config` is the parsed config, used as it is. Its hyper-parameters are plain dicts and lists (the config's
    `to_dict`, class names, class weights, palette), so a checkpoint loads with `torch.load(weights_only=True)`;
    `on_save_checkpoint` adds the `InferenceSpec`.
    """

    # The network as validation predicts with it, held while validation runs (`_hold_inference_model`), else ().
    _inference_model: tuple[torch.nn.Module, ...]

    def __init__(self, config: TrainConfig, num_classes: int, class_names: list[str],
                 class_weights: list[float] | None = None, model: torch.nn.Module | None = None,
                 palette: list[list[int]] | None = None) -> None:
        super().__init__()
        # The config as the plain flat dict it was parsed from (`to_dict`): checkpoints hold no dataclass.
        self.save_hyperparameters({"config": config.to_dict(), "num_classes": num_classes,
                                   "class_names": class_names, "class_weights": class_weights, "palette": palette})
        # The "auto" memory format made concrete here, where the run's device and precision are known.
        self.config: TrainConfig = dataclasses.replace(config, channels_last=run_channels_last(config))
        self.spec = self.config.inference_spec(num_classes=num_classes, class_names=class_names, palette=palette)
        if model is None:
            from seglab.models import build_model

            model = build_model(self.config.model, num_classes=num_classes, **self.config.model_options())
        self.model = model
        if self.config.channels_last:
            # Module.to takes memory_format as a keyword (documented), but torch's overloads leave it out.
            self.model = self.model.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
        cfg = self.config
        self.loss = build_loss(cfg.loss, ignore_index=cfg.data.folder.ignore_index, class_weights=class_weights,
                               focal_gamma=cfg.focal_gamma, ohem_top_fraction=cfg.ohem_top_fraction,
                               lovasz_per_image=cfg.lovasz_per_image)
        self.val_metrics = SegmentationMetrics(num_classes, cfg.data.folder.ignore_index)
        self.test_metrics = SegmentationMetrics(num_classes, cfg.data.folder.ignore_index)
        # Mean loss per image, gathered over DDP ranks as sums and counts: exact for shards of unequal length,
        # where Lightning's sync_dist would average the ranks' means.
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.augmentation = None
        if cfg.augment:
            from seglab.data.transforms import SegmentationAugmentation

            self.augmentation = SegmentationAugmentation(
                scale=tuple(cfg.scale) if cfg.scale else None, degrees=cfg.degrees, hflip=cfg.hflip, vflip=cfg.vflip,
                color_jitter=tuple(cfg.color_jitter) if cfg.color_jitter else None,
                ignore_index=cfg.data.folder.ignore_index)

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
        self._evaluate_step(batch, self.val_metrics, self.val_loss)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate_step(batch, self.test_metrics, self.test_loss)

    def on_validation_epoch_start(self) -> None:
        self._hold_inference_model()

    def on_test_epoch_start(self) -> None:
        self._hold_inference_model()

    def on_validation_start(self) -> None:
        self._share_rank_zero_buffers()

    def on_test_start(self) -> None:
        self._share_rank_zero_buffers()

    def _share_rank_zero_buffers(self) -> None:
        # With DDP each process updates its batch-norm running statistics with its own batches; rank 0's are
        # the ones checkpoints keep. Evaluating with them everywhere makes the gathered scores those of the
        # saved model. (Training is unaffected: DDP sends rank 0's buffers out before every training forward.)
        if self._trainer is not None and self.trainer.world_size > 1:
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def on_validation_epoch_end(self) -> None:
        self._inference_model = ()
        self._log_scores("val", self.val_metrics, self.val_loss)

    def on_test_epoch_end(self) -> None:
        self._inference_model = ()
        self._log_scores("test", self.test_metrics, self.test_loss)

    def _hold_inference_model(self) -> None:
        # Validation scores the network as `Predictor` runs it (BatchNorm folded), so the checkpoint chosen by
        # these scores gives the same scores after `seglab.load`. A tuple, so that the copy is not registered
        # as a submodule (and never reaches a checkpoint).
        self._inference_model = (inference_model(self.model, channels_last=self.config.channels_last is True,
                                                  device=self.device),)

    def _evaluate_step(self, batch: Any, metrics: SegmentationMetrics, loss: MeanMetric) -> None:
        images, masks = batch
        model = self._inference_model[0] if getattr(self, "_inference_model", ()) else self.model
        logits = predict_logits(model, images, self.spec, tile=self.config.eval_tile)
        # Weighted by the images that have a labelled pixel: one without any (the padding of an empty DDP shard,
        # an unlabelled image) has a loss of 0 that must not pull the mean down.
        labelled = (masks != self.config.data.folder.ignore_index).flatten(1).any(1).sum()
        loss.update(self.loss(logits, masks), weight=labelled)
        metrics.update(logits, masks)

    def _log_scores(self, stage: str, metrics: SegmentationMetrics, loss: MeanMetric) -> None:
        # compute() gathers the confusion matrix and the loss sums from every DDP rank, so all ranks log
        # identical values; sync_dist averages identical values: it only tells Lightning they are global.
        self.log(f"{stage}/loss", loss.compute().float(), sync_dist=True)
        loss.reset()
        scores = metrics.compute()
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
        callbacks = trainer.callbacks  # pyright: ignore[reportAttributeAccessIssue] (set by Lightning's connectors)
        timer = next(c for c in callbacks if isinstance(c, Timer))
        elapsed = timer.time_elapsed("train")
        return elapsed / max(1e-9, elapsed + (timer.time_remaining("train") or 0.0))
