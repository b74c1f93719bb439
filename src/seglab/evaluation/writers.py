"""Evaluation output: the console table, metrics.json, per-image and confusion-matrix CSVs (and PNG).

Every file is written to a temporary file in the destination folder and moved into place, so a reader never
sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.evaluation.scores import ArrayLike, Evaluation, as_numpy
from seglab.inference.files import atomic_path

SUMMARY_KEYS = ("pixel_accuracy", "mean_class_accuracy", "miou", "frequency_weighted_iou", "mean_dice",
                "mean_precision", "mean_recall")
# JSON name of each per-class score -> its key in `scores_from_confusion`.
PER_CLASS_KEYS = {"iou": "iou_per_class", "dice": "dice_per_class", "precision": "precision_per_class",
                  "recall": "recall_per_class"}

def scores_to_dict(scores: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """`scores_from_confusion` output as a JSON-ready dict; NaN becomes None (JSON null).

    The summary scores (`SUMMARY_KEYS`) as floats, then `per_class: {name: {"iou", "dice", "precision", "recall"}}`.
    """
    result: dict[str, Any] = {key: _float_or_none(scores[key]) for key in SUMMARY_KEYS}
    per_class: dict[str, dict[str, float | None]] = {name: {} for name in class_names}
    for json_key, scores_key in PER_CLASS_KEYS.items():
        values = as_numpy(scores[scores_key])
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
    counts = as_numpy(confusion)
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
    counts = as_numpy(confusion).astype(np.float64)
    row_sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, row_sums, out=np.zeros_like(counts), where=row_sums > 0)


def _float_or_none(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def _write_atomically(path: str | Path, text: str) -> None:
    # Opened with "x" rather than made by tempfile.mkstemp, whose 0600 mode would carry over to the result.
    with atomic_path(path) as temporary, open(temporary, "x", encoding="utf-8", newline="") as file:
        file.write(text)


def format_scores(scores: dict[str, torch.Tensor], class_names: Sequence[str], *, title: str = "") -> str:
    """A plain-text table: the summary scores, then IoU, Dice, precision and recall per class, in percent."""

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


def write_evaluation(out: Path, evaluation: Evaluation, class_names: Sequence[str], **about: Any) -> dict[str, Any]:
    """metrics.json (scores plus `about`), per_image.csv, confusion_matrix.csv and .png into `out`; returns what
    metrics.json holds."""
    from seglab.evaluation.plots import save_confusion_matrix_png

    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(out / "metrics.json", evaluation.scores, class_names, **about)
    write_per_image_csv(out / "per_image.csv", evaluation.per_image, class_names)
    write_confusion_csv(out / "confusion_matrix.csv", evaluation.confusion, class_names)
    save_confusion_matrix_png(evaluation.confusion, class_names, out / "confusion_matrix.png")
    return {**scores_to_dict(evaluation.scores, class_names), **about}
