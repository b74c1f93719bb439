"""Metrics from the confusion matrix (ignore_index excluded everywhere), the console table and the PNGs."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from seglab.evaluation.metrics import SegmentationMetrics, scores_from_confusion
from seglab.evaluation.plots import plot_training_curves, save_mask_png, save_prediction_grid
from seglab.evaluation.reports import evaluate, format_scores


def test_scores_on_a_hand_computed_example():
    # Truth 0,0,1,1,2,255 / prediction 0,1,1,1,0,2: the ignored pixel's wrong prediction must not count.
    metric = SegmentationMetrics(3, ignore_index=255)
    metric.update(torch.tensor([[0, 1, 1, 1, 0, 2]]), torch.tensor([[0, 0, 1, 1, 2, 255]]))
    scores = metric.compute()
    assert float(scores["pixel_accuracy"]) == 3 / 5
    assert float(scores["mean_class_accuracy"]) == (1 / 2 + 1 + 0) / 3
    # IoU: class 0 -> 1 / (2 + 2 - 1), class 1 -> 2 / (2 + 3 - 2), class 2 -> 0 / (1 + 0 - 0).
    assert torch.allclose(scores["iou_per_class"], torch.tensor([1 / 3, 2 / 3, 0.0], dtype=torch.float64))
    assert float(scores["miou"]) == (1 / 3 + 2 / 3 + 0) / 3


def test_batches_accumulate_and_logits_are_accepted():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 9, 9, generator=generator)
    target = torch.randint(0, 5, (4, 9, 9), generator=generator)
    target[:, 0] = 255
    whole = SegmentationMetrics(5)
    whole.update(logits, target)
    split = SegmentationMetrics(5)
    split.update(logits[:2], target[:2])
    split.update(logits[2:].argmax(1), target[2:])
    for key, value in whole.compute().items():
        assert torch.allclose(value, split.compute()[key], equal_nan=True)
    # Same numbers from a confusion matrix built by hand with the ignored row dropped.
    valid = target != 255
    confusion = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(target[valid].tolist(), logits.argmax(1)[valid].tolist(), strict=True):
        confusion[t, p] += 1
    assert torch.allclose(scores_from_confusion(confusion)["miou"], whole.compute()["miou"])


def test_absent_class_is_left_out_of_the_means():
    confusion = torch.tensor([[5, 0, 0], [1, 4, 0], [0, 0, 0]])  # class 2 neither true nor predicted
    scores = scores_from_confusion(confusion)
    assert math.isnan(float(scores["iou_per_class"][2]))
    assert float(scores["miou"]) == (5 / 6 + 4 / 5) / 2
    assert float(scores["mean_class_accuracy"]) == (1 + 4 / 5) / 2


def test_format_scores_table():
    scores = scores_from_confusion(torch.tensor([[5, 0], [1, 4]]))
    table = format_scores(scores, ["background", "cell"], title="test")
    assert table.splitlines()[0] == "test"
    assert "mIoU" in table and "IoU cell" in table and " 80.00" in table  # cell IoU 4/5


def test_evaluate_runs_a_predictor_over_a_dataset():
    images = torch.rand(5, 3, 8, 8)
    masks = (images[:, 0] > 0.5).long()
    dataset = torch.utils.data.TensorDataset(images, masks)

    def oracle(batch):
        return torch.stack([batch[:, 0] <= 0.5, batch[:, 0] > 0.5], dim=1).float()

    result = evaluate(oracle, dataset, num_classes=2, batch_size=2)
    assert float(result.scores["miou"]) == 1.0
    assert torch.equal(result.predictions.long(), masks)


def test_pngs(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_miou": 0.2 * e,
             "val_pixel_accuracy": 0.5 + 0.1 * e, "lr": 1e-3 * 0.5 ** e} for e in range(4)]
    plot_training_curves(rows, tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size[0] > 600
    save_mask_png(np.array([[0, 1], [2, 255]]), tmp_path / "mask.png", num_classes=3)
    assert np.array_equal(np.array(Image.open(tmp_path / "mask.png")), [[0, 1], [2, 255]])
    images = torch.rand(3, 3, 10, 12)
    masks = torch.randint(0, 3, (3, 10, 12))
    save_prediction_grid(images, masks, masks, tmp_path / "grid.png", num_classes=3, gap=2)
    grid = np.array(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (3 * 10 + 2 * 2, 3 * 12 + 2 * 2, 3)
    assert np.array_equal(grid[:10, :12], (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
