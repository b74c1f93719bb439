"""Training's validation metric: one confusion matrix accumulated across batches and DDP ranks (torchmetrics),
scored by `scores_from_confusion`; `ignore_index` excluded everywhere."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from seglab.evaluation.scores import scores_from_confusion
from seglab.inference.predictor import class_map


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
            predictions = class_map(predictions, dim=1)
        self.confusion.update(predictions, target)

    def compute(self) -> dict[str, torch.Tensor]:
        return scores_from_confusion(self.confusion.compute())

    def reset(self) -> None:
        super().reset()
        self.confusion.reset()
