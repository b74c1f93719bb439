"""Segmentation metrics from one accumulated confusion matrix (torchmetrics), `ignore_index` excluded everywhere."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summary and per-class scores (float64) from a (C, C) confusion matrix: rows true classes, columns predictions.

    Keys: `pixel_accuracy`, `mean_class_accuracy`, `miou`, `frequency_weighted_iou`, `mean_dice`, `mean_precision`,
    `mean_recall` (scalars) and `iou_per_class`, `dice_per_class`, `precision_per_class`, `recall_per_class` (C,).
    A per-class score whose denominator is 0 is NaN and left out of the means: IoU and Dice of a class absent from
    both truth and prediction, precision of a class never predicted, recall (= class accuracy) of a class with no
    true pixels. The frequency-weighted IoU weighs each class's IoU by its share of the true pixels.
    """
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    per_true = confusion.sum(dim=1)
    per_predicted = confusion.sum(dim=0)
    total = confusion.sum()
    iou = _ratio(true_positive, per_true + per_predicted - true_positive)
    dice = _ratio(2 * true_positive, per_true + per_predicted)
    precision = _ratio(true_positive, per_predicted)
    recall = _ratio(true_positive, per_true)
    # A NaN IoU belongs to a class with no true pixels, i.e. weight 0, so it adds 0 rather than NaN.
    # An empty matrix makes every frequency NaN, and so the sum.
    frequency_weighted_iou = (_ratio(per_true, total) * iou.nan_to_num(0.0)).sum()
    return {
        "pixel_accuracy": _ratio(true_positive.sum(), total),
        "mean_class_accuracy": recall.nanmean(),
        "miou": iou.nanmean(),
        "iou_per_class": iou,
        "frequency_weighted_iou": frequency_weighted_iou,
        "dice_per_class": dice,
        "mean_dice": dice.nanmean(),
        "precision_per_class": precision,
        "recall_per_class": recall,
        "mean_precision": precision.nanmean(),
        "mean_recall": recall.nanmean(),
    }


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    # NaN where the denominator is 0: the score is undefined there, not 0. Dividing by 1 instead keeps 0/0 out.
    defined = denominator > 0
    quotient = numerator / torch.where(defined, denominator, torch.ones_like(denominator))
    return torch.where(defined, quotient, torch.full_like(quotient, float("nan")))


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
