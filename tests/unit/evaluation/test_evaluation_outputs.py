"""The `seglab evaluate` output files (metrics.json, per-image and confusion CSVs, confusion PNG) and light imports."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from seglab.evaluation.plots import save_confusion_matrix_png
from seglab.evaluation.scores import confusion_from_labels, image_scores, row_normalised, scores_from_confusion
from seglab.evaluation.writers import (
    scores_to_dict,
    write_confusion_csv,
    write_metrics_json,
    write_per_image_csv,
)


def per_image_scores(prediction, truth, num_classes, ignore_index=255):
    return image_scores(confusion_from_labels(prediction, truth, num_classes, ignore_index))

# Class 2 absent from truth and prediction, class 3 predicted once but never true (as in test_evaluation_metrics).
CONFUSION = torch.tensor([[5, 0, 0, 0], [1, 3, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
NAMES = ["background", "cell", "absent", "predicted only"]


def test_metrics_json_round_trips_with_nan_as_null(tmp_path):
    scores = scores_from_confusion(CONFUSION)
    path = tmp_path / "metrics.json"
    write_metrics_json(path, scores, NAMES, checkpoint=Path("runs/x/best.ckpt"), split="test", images=3,
                       precision="32-true")
    loaded = json.loads(path.read_text())
    assert loaded == scores_to_dict(scores, NAMES) | {"checkpoint": "runs/x/best.ckpt", "split": "test",
                                                      "images": 3, "precision": "32-true"}
    for key in ("pixel_accuracy", "mean_class_accuracy", "miou", "frequency_weighted_iou", "mean_dice",
                "mean_precision", "mean_recall"):
        assert loaded[key] == pytest.approx(float(scores[key]), abs=0), key
    assert loaded["per_class"]["cell"] == pytest.approx({"iou": 3 / 5, "dice": 6 / 8, "precision": 1.0,
                                                         "recall": 3 / 5})
    assert loaded["per_class"]["absent"] == {"iou": None, "dice": None, "precision": None, "recall": None}
    assert loaded["per_class"]["predicted only"] == {"iou": 0.0, "dice": 0.0, "precision": 0.0, "recall": None}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


def test_metrics_json_refuses_extra_keys_that_overwrite_scores_and_nan_extras(tmp_path):
    scores = scores_from_confusion(CONFUSION)
    with pytest.raises(ValueError, match="miou"):
        write_metrics_json(tmp_path / "metrics.json", scores, NAMES, miou=1.0)
    with pytest.raises(ValueError):
        write_metrics_json(tmp_path / "metrics.json", scores, NAMES, seconds=math.nan)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="3 class names"):
        scores_to_dict(scores, NAMES[:3])


def test_per_image_scores_on_a_hand_computed_example():
    # Valid pixels (truth, prediction): (0,0) (0,1) (1,1) (1,1) (2,2); the ignored pixel's 0 does not count.
    prediction = np.array([[0, 1, 1], [1, 0, 2]])
    truth = np.array([[0, 0, 1], [1, 255, 2]])
    expected_confusion = np.zeros((4, 4), dtype=np.int64)
    expected_confusion[0, 0] = expected_confusion[0, 1] = expected_confusion[2, 2] = 1
    expected_confusion[1, 1] = 2
    assert np.array_equal(confusion_from_labels(prediction, truth, 4), expected_confusion)
    row = per_image_scores(prediction, truth, num_classes=4, ignore_index=255)
    assert row["pixel_accuracy"] == pytest.approx(4 / 5)
    # IoU: class 0 -> 1 / (2 + 1 - 1), class 1 -> 2 / (2 + 3 - 2), class 2 -> 1 / 1, class 3 absent from both.
    assert row["iou_per_class"][:3] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert math.isnan(row["iou_per_class"][3])
    # Torch tensors (any integer dtype) give the same row.
    from_torch = per_image_scores(torch.from_numpy(prediction).to(torch.uint8), torch.from_numpy(truth), 4)
    assert from_torch["pixel_accuracy"] == row["pixel_accuracy"]
    assert np.array_equal(from_torch["iou_per_class"], row["iou_per_class"], equal_nan=True)


def test_per_image_scores_edge_cases():
    ignored = per_image_scores(np.zeros((2, 2)), np.full((2, 2), 255), num_classes=2)
    assert math.isnan(ignored["pixel_accuracy"]) and all(map(math.isnan, ignored["iou_per_class"]))
    with pytest.raises(ValueError, match="outside"):
        per_image_scores(np.array([0, 3]), np.array([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        per_image_scores(np.zeros((2, 3)), np.zeros((3, 2)), num_classes=3)


def test_per_image_csv_reads_back(tmp_path):
    rows = [{"file": "a.png", **per_image_scores(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4)},
            {"file": "b.png", **per_image_scores(np.array([3, 3]), np.array([3, 255]), 4)}]
    path = tmp_path / "per_image.csv"
    write_per_image_csv(path, rows, NAMES)
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        read = list(reader)
    assert reader.fieldnames == ["file", "pixel_accuracy", "iou_background", "iou_cell", "iou_absent",
                                 "iou_predicted only"]
    assert [row["file"] for row in read] == ["a.png", "b.png"]
    assert float(read[0]["pixel_accuracy"]) == pytest.approx(3 / 4, abs=1e-6)
    assert float(read[0]["iou_absent"]) == pytest.approx(1 / 2, abs=1e-6)  # class 2: 1 / (2 + 1 - 1)
    assert read[0]["iou_predicted only"] == ""  # class 3 absent from both in a.png
    assert read[1]["iou_background"] == "" and float(read[1]["iou_predicted only"]) == 1.0


def test_confusion_csv_reads_back(tmp_path):
    path = tmp_path / "confusion.csv"
    write_confusion_csv(path, CONFUSION.double(), NAMES)
    with open(path, newline="") as file:
        table = list(csv.reader(file))
    assert table[0][1:] == NAMES and [row[0] for row in table[1:]] == NAMES
    assert np.array_equal(np.array([[int(cell) for cell in row[1:]] for row in table[1:]]), CONFUSION.numpy())


def test_row_normalised_rows_sum_to_one_and_empty_rows_stay_zero():
    fractions = row_normalised(CONFUSION)
    assert fractions.dtype == np.float64
    assert np.allclose(fractions.sum(axis=1), [1, 1, 0, 0])
    assert np.allclose(fractions[1], [1 / 5, 3 / 5, 0, 1 / 5])
    random = np.random.default_rng(0).integers(1, 50, (6, 6))
    assert np.allclose(row_normalised(random).sum(axis=1), 1)


def test_confusion_matrix_png(tmp_path):
    backend = matplotlib.get_backend()
    path = tmp_path / "confusion.png"
    save_confusion_matrix_png(CONFUSION, NAMES, path)
    assert path.stat().st_size > 5_000
    with Image.open(path) as image:
        small = image.size
    assert min(small) > 300
    # More classes (and a long name) make a bigger figure; the caller's matplotlib backend is left as it was.
    many = [f"class {index}" for index in range(11)] + ["a rather long class name"]
    save_confusion_matrix_png(np.random.default_rng(0).integers(0, 100, (12, 12)), many, tmp_path / "many.png")
    with Image.open(tmp_path / "many.png") as image:
        assert image.size[0] > small[0] and image.size[1] > small[1]
    assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match="class names"):
        save_confusion_matrix_png(CONFUSION, NAMES[:3], tmp_path / "wrong.png")


def test_outputs_and_plots_import_without_torchmetrics_or_lightning():
    code = ("import sys, seglab.evaluation.writers, seglab.evaluation.scores, seglab.evaluation.plots; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torchmetrics', 'lightning', 'kornia')); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
