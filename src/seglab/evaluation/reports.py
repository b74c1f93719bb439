"""Evaluating a trained model on a dataset and reporting the scores as a console table."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from seglab.evaluation.metrics import SegmentationMetrics


@dataclass
class Evaluation:
    """Scores (as in `scores_from_confusion`) and the predicted label maps, in dataset order."""

    scores: dict[str, torch.Tensor]
    predictions: torch.Tensor


@torch.inference_mode()
def evaluate(predict: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, *, num_classes: int,
             ignore_index: int = 255, batch_size: int = 16) -> Evaluation:
    """Run `predict` (images in [0, 1] -> logits) over `dataset`, accumulating the metrics and predictions."""
    metrics = SegmentationMetrics(num_classes, ignore_index)
    predictions = []
    for images, masks in DataLoader(dataset, batch_size=batch_size):
        labels = predict(images).argmax(dim=1)
        metrics.update(labels, masks)
        predictions.append(labels.to(torch.uint8 if num_classes <= 256 else torch.int64))
    return Evaluation(metrics.compute(), torch.cat(predictions))


def format_scores(scores: dict[str, torch.Tensor], class_names: Sequence[str], *, title: str = "") -> str:
    """A plain-text table: the three summary scores, then IoU per class."""

    def percent(value: torch.Tensor | float) -> str:
        value = float(value)
        return "   n/a" if math.isnan(value) else f"{100 * value:6.2f}"

    width = max(24, *(len(name) + 6 for name in class_names))
    lines = [title] if title else []
    lines += [f"{'metric':<{width}} {'%':>6}", "-" * (width + 7)]
    lines.append(f"{'pixel accuracy':<{width}} {percent(scores['pixel_accuracy'])}")
    lines.append(f"{'mean class accuracy':<{width}} {percent(scores['mean_class_accuracy'])}")
    lines.append(f"{'mIoU':<{width}} {percent(scores['miou'])}")
    for name, iou in zip(class_names, scores["iou_per_class"], strict=True):
        lines.append(f"{'IoU ' + name:<{width}} {percent(iou)}")
    return "\n".join(lines)
