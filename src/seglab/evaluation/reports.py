"""Evaluating a trained model on a dataset and reporting the scores as a console table."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from seglab.evaluation.metrics import scores_from_confusion

if TYPE_CHECKING:
    from seglab.inference import Predictor


@dataclass
class Evaluation:
    """What `evaluate` measured: the confusion matrix (rows truth, columns prediction), its scores (as in
    `scores_from_confusion`), one score row per image, and the predicted maps if they were kept."""

    confusion: torch.Tensor
    scores: dict[str, torch.Tensor]
    per_image: list[dict[str, Any]]
    predictions: list[torch.Tensor] | None = None


def item_names(dataset: Dataset) -> list[str]:
    """A name per item for per-image reports: the image file where the dataset has files, else split/index."""
    if isinstance(dataset, Subset):
        names = item_names(dataset.dataset)
        return [names[i] for i in dataset.indices]
    pairs = getattr(dataset, "pairs", None)
    if pairs is not None:
        from seglab.data.files import display_path

        return [display_path(image) for image, _ in pairs]
    names = getattr(dataset, "names", None)
    if names is not None:
        return [str(name) for name in names]
    split = getattr(dataset, "split", "item")
    return [f"{split}/{index:05d}" for index in range(len(dataset))]


def evaluate(predictor: Predictor, dataset: Dataset, *, batch_size: int | None = None, tile: int | None = None,
             overlap: float = 0.25, tta: str | None = None, scales: Sequence[float] | None = None,
             keep_predictions: bool = False, progress: Callable[[Iterable], Iterable] = iter) -> Evaluation:
    """Predict every `(image, mask)` of `dataset` with `predictor` and score it against the mask, at the
    dataset's resolution (`ignore_index` pixels left out)."""
    from seglab.evaluation.outputs import confusion_from_labels, image_scores_from_confusion
    from seglab.inference.predictor import same_size_batches, stack

    # A plain sum of per-image confusion matrices rather than a torchmetrics metric: it never tries to
    # synchronise with other DDP ranks (rank 0 evaluates alone after training).
    spec = predictor.spec
    confusion = np.zeros((spec.num_classes, spec.num_classes), dtype=np.int64)
    names = item_names(dataset)
    per_image: list[dict[str, Any]] = []
    predictions: list[torch.Tensor] = []
    # Datasets that keep each file's own size cannot go through a collating DataLoader.
    items = ((index, *dataset[index]) for index in range(len(dataset)))
    for batch in progress(same_size_batches(items, predictor.images_per_batch(tile, batch_size),
                                            lambda item: item[1])):
        scores, _ = predictor.scores(stack([image for _, image, _ in batch]), tile=tile, overlap=overlap, tta=tta,
                                     scales=scales)
        labels = scores.argmax(dim=1)
        for (index, _, mask), label in zip(batch, labels, strict=True):
            counts = confusion_from_labels(label.numpy(), mask.numpy(), spec.num_classes, spec.ignore_index)
            confusion += counts
            per_image.append({"file": names[index], **image_scores_from_confusion(counts)})
            if keep_predictions:
                predictions.append(label.to(torch.uint8 if spec.num_classes <= 256 else torch.int64))
    confusion_tensor = torch.from_numpy(confusion)
    return Evaluation(confusion_tensor, scores_from_confusion(confusion_tensor), per_image,
                      predictions if keep_predictions else None)


def format_scores(scores: dict[str, torch.Tensor], class_names: Sequence[str], *, title: str = "") -> str:
    """A plain-text table: the summary scores, then IoU, Dice, precision and recall per class, in percent.

    Scores without the Dice / precision / recall keys (older callers) get the IoU of each class instead.
    """

    def percent(value: torch.Tensor | float) -> str:
        value = float(value)
        return "   n/a" if math.isnan(value) else f"{100 * value:6.2f}"

    width = max(24, *(len(name) + 6 for name in class_names))
    lines = [title] if title else []
    lines += [f"{'metric':<{width}} {'%':>6}", "-" * (width + 7)]
    lines.append(f"{'pixel accuracy':<{width}} {percent(scores['pixel_accuracy'])}")
    lines.append(f"{'mean class accuracy':<{width}} {percent(scores['mean_class_accuracy'])}")
    lines.append(f"{'mIoU':<{width}} {percent(scores['miou'])}")
    columns = {"IoU": "iou_per_class", "Dice": "dice_per_class", "precision": "precision_per_class",
               "recall": "recall_per_class"}
    if not all(key in scores for key in (*columns.values(), "frequency_weighted_iou", "mean_dice")):
        for name, iou in zip(class_names, scores["iou_per_class"], strict=True):
            lines.append(f"{'IoU ' + name:<{width}} {percent(iou)}")
        return "\n".join(lines)
    if len(scores["iou_per_class"]) != len(class_names):
        raise ValueError(f"{len(scores['iou_per_class'])} classes in the scores, {len(class_names)} class names")
    lines.append(f"{'frequency-weighted IoU':<{width}} {percent(scores['frequency_weighted_iou'])}")
    lines.append(f"{'mean Dice':<{width}} {percent(scores['mean_dice'])}")
    # The IoU column lines up with the "%" column above; the others are as wide as their header.
    widths = {header: max(6, len(header)) for header in columns}
    lines += ["", f"{'class':<{width}} " + " ".join(f"{header:>{widths[header]}}" for header in columns)]
    lines.append("-" * len(lines[-1]))
    for index, name in enumerate(class_names):
        cells = (f"{percent(scores[key][index]):>{widths[header]}}" for header, key in columns.items())
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)
