"""Segmentation scores as pure arithmetic on confusion matrices (rows truth, columns prediction).

One formula for every score: whole datasets, single images (`image_scores`), training's validation
(`seglab.evaluation.metrics`), `seglab evaluate` and `predict --masks` all go through `scores_from_confusion`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


class PerImageScores(TypedDict):
    """One image's scores, as returned by `image_scores`."""

    pixel_accuracy: float  # NaN when every pixel is ignore_index
    iou_per_class: list[float]  # NaN for a class absent from both prediction and truth


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


def confusion_from_labels(prediction: ArrayLike, truth: ArrayLike, num_classes: int,
                          ignore_index: int | None = 255) -> np.ndarray:
    """(C, C) int64 confusion matrix of one label map pair (rows truth, columns prediction), ignore_index dropped.

    Takes numpy arrays or torch tensors (counted on their device) of equal shape.
    """
    if tuple(prediction.shape) != tuple(truth.shape):
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != truth shape {tuple(truth.shape)}")
    if isinstance(prediction, torch.Tensor) or isinstance(truth, torch.Tensor):
        device = prediction.device if isinstance(prediction, torch.Tensor) else truth.device
        prediction = torch.as_tensor(prediction, device=device).long()
        truth = torch.as_tensor(truth, device=device).long()
    else:
        prediction, truth = np.asarray(prediction, dtype=np.int64), np.asarray(truth, dtype=np.int64)
    if ignore_index is not None:
        valid = truth != ignore_index
        prediction, truth = prediction[valid], truth[valid]
    else:
        prediction, truth = prediction.reshape(-1), truth.reshape(-1)
    # Out-of-range labels would silently grow the bincount (or land in another cell), so refuse them.
    for name, labels in (("truth", truth), ("prediction", prediction)):
        if labels.shape[0]:  # 1-D here
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= num_classes:
                raise ValueError(f"{name} has labels in [{low}, {high}], outside [0, {num_classes})")
    cells = truth * num_classes + prediction
    if isinstance(cells, torch.Tensor):  # counted on the tensors' device
        counts = as_numpy(torch.bincount(cells, minlength=num_classes * num_classes))
    else:
        counts = np.bincount(cells, minlength=num_classes * num_classes)
    return counts.astype(np.int64).reshape(num_classes, num_classes)


def image_scores(confusion: np.ndarray) -> PerImageScores:
    """Pixel accuracy and IoU per class of one image, from its confusion matrix (`confusion_from_labels`)."""
    scores = scores_from_confusion(torch.from_numpy(np.asarray(confusion)))
    return {"pixel_accuracy": float(scores["pixel_accuracy"]),
            "iou_per_class": [float(value) for value in scores["iou_per_class"]]}


@dataclass
class Evaluation:
    """What an evaluation measured: the confusion matrix (rows truth, columns prediction), its scores (as in
    `scores_from_confusion`) and one score row per image (`{"file": name, **image_scores(...)}`)."""

    confusion: torch.Tensor
    scores: dict[str, torch.Tensor]
    per_image: list[dict[str, Any]]


@dataclass
class ScoreTally:
    """Scores predictions image by image: the summed confusion matrix and one row per image. `seglab evaluate`
    and `seglab predict --masks` both count with it."""

    num_classes: int
    ignore_index: int | None = 255
    confusion: np.ndarray = field(init=False)
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add(self, name: str, prediction: ArrayLike, truth: ArrayLike) -> PerImageScores:
        """Count one image's prediction against its truth; returns the image's scores."""
        counts = confusion_from_labels(prediction, truth, self.num_classes, self.ignore_index)
        self.confusion += counts
        scores = image_scores(counts)
        self.per_image.append({"file": name, **scores})
        return scores

    def result(self) -> Evaluation:
        confusion = torch.from_numpy(self.confusion.copy())
        return Evaluation(confusion, scores_from_confusion(confusion), self.per_image)


def as_numpy(values: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def row_normalised(confusion: ArrayLike) -> np.ndarray:
    """Float64 copy of the confusion matrix with each true-class row divided by its sum; an empty row stays 0."""
    counts = as_numpy(confusion).astype(np.float64)
    row_sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)
