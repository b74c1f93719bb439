"""Evaluation output files: metrics.json, per-image and confusion-matrix CSVs, and the numbers behind them.

Needs only numpy and torch (no torchmetrics or Lightning), so inference code can write the same files.
Every file is written to a temporary file in the destination folder and moved into place, so a reader never
sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

SUMMARY_KEYS = ("pixel_accuracy", "mean_class_accuracy", "miou", "frequency_weighted_iou", "mean_dice",
                "mean_precision", "mean_recall")
# JSON name of each per-class score -> its key in `scores_from_confusion`.
PER_CLASS_KEYS = {"iou": "iou_per_class", "dice": "dice_per_class", "precision": "precision_per_class",
                  "recall": "recall_per_class"}

ArrayLike = torch.Tensor | np.ndarray


class PerImageScores(TypedDict):
    """One image's scores, as returned by `per_image_scores`."""

    pixel_accuracy: float  # NaN when every pixel is ignore_index
    iou_per_class: list[float]  # NaN for a class absent from both prediction and truth


def scores_to_dict(scores: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """`scores_from_confusion` output as a JSON-ready dict; NaN becomes None (JSON null).

    The summary scores (`SUMMARY_KEYS`) as floats, then `per_class: {name: {"iou", "dice", "precision", "recall"}}`.
    """
    result: dict[str, Any] = {key: _float_or_none(scores[key]) for key in SUMMARY_KEYS}
    per_class: dict[str, dict[str, float | None]] = {name: {} for name in class_names}
    for json_key, scores_key in PER_CLASS_KEYS.items():
        values = _numpy(scores[scores_key])
        if len(values) != len(class_names):
            raise ValueError(f"{scores_key} has {len(values)} values for {len(class_names)} class names")
        for name, value in zip(class_names, values, strict=True):
            per_class[name][json_key] = _float_or_none(value)
    result["per_class"] = per_class
    return result


def write_metrics_json(path: str | Path, scores: Mapping[str, Any], class_names: Sequence[str],
                       **extra: Any) -> None:
    """Write `extra` (e.g. checkpoint, split, images, precision) followed by `scores_to_dict(scores, class_names)`.

    Paths in `extra` are written as strings; a NaN anywhere in `extra` raises ValueError (JSON has no NaN).
    """
    body = scores_to_dict(scores, class_names)
    clashes = sorted(extra.keys() & body.keys())
    if clashes:
        raise ValueError(f"extra keys {clashes} would overwrite scores")
    text = json.dumps({**extra, **body}, indent=2, allow_nan=False, default=str)
    _write_atomically(path, text + "\n")


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
        bincount = torch.bincount
    else:
        prediction, truth = np.asarray(prediction, dtype=np.int64), np.asarray(truth, dtype=np.int64)
        bincount = np.bincount
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
    counts = bincount(truth * num_classes + prediction, minlength=num_classes * num_classes)
    return _numpy(counts).astype(np.int64).reshape(num_classes, num_classes)


def per_image_scores(prediction: ArrayLike, truth: ArrayLike, num_classes: int,
                     ignore_index: int | None = 255) -> PerImageScores:
    """Pixel accuracy and IoU per class of one image, from its own confusion matrix (see `confusion_from_labels`)."""
    return image_scores_from_confusion(confusion_from_labels(prediction, truth, num_classes, ignore_index))


def image_scores_from_confusion(confusion: np.ndarray) -> PerImageScores:
    """`per_image_scores` of an image whose confusion matrix is already counted."""
    confusion = confusion.astype(np.float64)
    true_positive = np.diagonal(confusion)
    union = confusion.sum(axis=1) + confusion.sum(axis=0) - true_positive
    total = confusion.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, math.nan)
    return {"pixel_accuracy": float(true_positive.sum() / total) if total > 0 else math.nan,
            "iou_per_class": [float(value) for value in iou]}


def write_per_image_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], class_names: Sequence[str]) -> None:
    """Columns `file, pixel_accuracy, iou_<class>...`, one line per row; NaN is an empty cell.

    Each row is `{"file": name, **per_image_scores(...)}`.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "pixel_accuracy", *(f"iou_{name}" for name in class_names)])
    for row in rows:
        if len(row["iou_per_class"]) != len(class_names):
            raise ValueError(f"{row['file']}: {len(row['iou_per_class'])} IoU values for {len(class_names)} classes")
        writer.writerow([row["file"], _csv_number(row["pixel_accuracy"]),
                         *(_csv_number(value) for value in row["iou_per_class"])])
    _write_atomically(path, buffer.getvalue())


def write_confusion_csv(path: str | Path, confusion: ArrayLike, class_names: Sequence[str]) -> None:
    """The raw (C, C) pixel counts with class names as header row (predictions) and first column (truth)."""
    counts = _numpy(confusion)
    if counts.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion shape {counts.shape} does not match {len(class_names)} class names")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["truth \\ prediction", *class_names])
    for name, row in zip(class_names, counts, strict=True):
        # Counts arrive as int64 or as float64 from .double(); both are whole numbers.
        writer.writerow([name, *(int(value) for value in row)])
    _write_atomically(path, buffer.getvalue())


def row_normalised(confusion: ArrayLike) -> np.ndarray:
    """Float64 copy of the confusion matrix with each true-class row divided by its sum; an empty row stays 0."""
    counts = _numpy(confusion).astype(np.float64)
    row_sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _float_or_none(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def _write_atomically(path: str | Path, text: str) -> None:
    # The temporary file sits in the target's folder, so os.replace is a rename within one file system. It is
    # opened with "x" rather than made by tempfile.mkstemp, whose 0600 mode would carry over to the result.
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
