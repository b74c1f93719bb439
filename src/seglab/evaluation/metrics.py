"""Segmentation metrics from one accumulated confusion matrix (torchmetrics), `ignore_index` excluded everywhere."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pixel accuracy, mean class accuracy, mIoU and per-class IoU from a (C, C) confusion matrix.

    Rows are true classes, columns predictions. A class with no true pixels is left out of the mean class
    accuracy, and a class absent from both truth and prediction is left out of the mIoU (its IoU is NaN).
    """
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    per_true = confusion.sum(dim=1)
    per_predicted = confusion.sum(dim=0)
    union = per_true + per_predicted - true_positive
    total = confusion.sum()
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=confusion.device)
    class_accuracy = torch.where(per_true > 0, true_positive / per_true.clamp(min=1), nan)
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
    return {
        "pixel_accuracy": (true_positive.sum() / total) if total > 0 else nan,
        "mean_class_accuracy": class_accuracy.nanmean(),
        "miou": iou.nanmean(),
        "iou_per_class": iou,
    }


class SegmentationMetrics(Metric):
    """Accumulates a confusion matrix over batches of logits or labels and reports `scores_from_confusion`.

    Synchronises across DDP processes like any torchmetrics metric, so every rank sees the same numbers.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)

    def update(self, predictions: torch.Tensor, target: torch.Tensor) -> None:
        # Accepts logits (N, C, H, W) or label maps (N, H, W).
        if predictions.ndim == target.ndim + 1:
            predictions = predictions.argmax(dim=1)
        self.confusion.update(predictions, target)

    def compute(self) -> dict[str, torch.Tensor]:
        return scores_from_confusion(self.confusion.compute())

    def reset(self) -> None:
        super().reset()
        self.confusion.reset()
