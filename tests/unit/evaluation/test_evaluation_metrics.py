"""Metrics from the confusion matrix (ignore_index excluded everywhere), the console table and the PNGs."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from seglab.evaluation.loop import evaluate
from seglab.evaluation.metrics import SegmentationMetrics
from seglab.evaluation.plots import plot_training_curves, save_prediction_grid
from seglab.evaluation.scores import scores_from_confusion
from seglab.evaluation.writers import format_scores
from seglab.inference import InferenceSpec, Predictor


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


# Truth 0 and 1 only; class 2 absent from truth and prediction; class 3 predicted once (for a class-1 pixel) but
# never true. Per class: true pixels 5, 5, 0, 0; predicted 6, 3, 0, 1; correct 5, 3, 0, 0; 10 pixels in all.
HAND_CONFUSION = torch.tensor([[5, 0, 0, 0], [1, 3, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
NAN = float("nan")


def test_all_scores_on_a_hand_computed_confusion_matrix():
    scores = scores_from_confusion(HAND_CONFUSION)
    assert all(value.dtype == torch.float64 for value in scores.values())

    def close(key, expected):
        assert torch.allclose(scores[key], torch.tensor(expected, dtype=torch.float64), equal_nan=True), key

    close("pixel_accuracy", 8 / 10)
    close("iou_per_class", [5 / 6, 3 / 5, NAN, 0.0])  # class 3: 0 / (0 + 1 - 0)
    close("miou", (5 / 6 + 3 / 5 + 0) / 3)
    close("frequency_weighted_iou", 0.5 * 5 / 6 + 0.5 * 3 / 5)  # classes 2 and 3 have no true pixels
    close("dice_per_class", [10 / 11, 6 / 8, NAN, 0.0])
    close("mean_dice", (10 / 11 + 6 / 8 + 0) / 3)
    close("precision_per_class", [5 / 6, 1.0, NAN, 0.0])
    close("mean_precision", (5 / 6 + 1 + 0) / 3)
    close("recall_per_class", [1.0, 3 / 5, NAN, NAN])  # class 3 was predicted but is never true
    close("mean_recall", (1 + 3 / 5) / 2)
    close("mean_class_accuracy", (1 + 3 / 5) / 2)


def test_recall_is_the_class_accuracy_and_fwiou_is_weighted_by_true_pixels():
    generator = torch.Generator().manual_seed(1)
    confusion = torch.randint(0, 20, (5, 5), generator=generator)
    confusion[2] = 0  # a class with no true pixels
    scores = scores_from_confusion(confusion)
    per_true = confusion.sum(1).double()
    assert torch.allclose(scores["recall_per_class"], confusion.diagonal() / per_true, equal_nan=True)
    assert torch.allclose(scores["mean_recall"], scores["mean_class_accuracy"])
    expected = sum(float(per_true[c] / per_true.sum() * scores["iou_per_class"][c]) for c in (0, 1, 3, 4))
    assert float(scores["frequency_weighted_iou"]) == pytest.approx(expected)
    # Dice = 2 IoU / (1 + IoU) class by class.
    iou = scores["iou_per_class"]
    assert torch.allclose(scores["dice_per_class"], 2 * iou / (1 + iou), equal_nan=True)


def test_an_empty_confusion_matrix_gives_nan_everywhere():
    scores = scores_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert all(bool(value.isnan().all()) for value in scores.values())


def test_format_scores_table():
    scores = scores_from_confusion(torch.tensor([[5, 0], [1, 4]]))
    table = format_scores(scores, ["background", "cell"], title="test")
    lines = table.splitlines()
    assert lines[0] == "test"
    # The first lines keep the old layout: 9/10 pixels right, mIoU (5/6 + 4/5) / 2.
    assert lines[1:4] == [f"{'metric':<24} {'%':>6}", "-" * 31, f"{'pixel accuracy':<24}  90.00"]
    assert lines[5] == f"{'mIoU':<24}  81.67"
    assert "frequency-weighted IoU" in table and "mean Dice" in table
    header = next(line for line in lines if line.startswith("class"))
    assert header.split() == ["class", "IoU", "Dice", "precision", "recall"]
    # cell: IoU 4/5, Dice 8/9, precision 4/4, recall 4/5.
    assert lines[-1].split() == ["cell", "80.00", "88.89", "100.00", "80.00"]


def test_format_scores_marks_undefined_scores():
    table = format_scores(scores_from_confusion(HAND_CONFUSION), ["a", "b", "absent", "predicted only"])
    assert table.splitlines()[-2].split() == ["absent", "n/a", "n/a", "n/a", "n/a"]
    assert table.splitlines()[-1].split() == ["predicted", "only", "0.00", "0.00", "0.00", "n/a"]


class Oracle(torch.nn.Module):
    """Predicts class 1 where the red channel is above 0.5: exactly the masks built below."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([images[:, 0] <= 0.5, images[:, 0] > 0.5], dim=1).float()


def test_evaluate_runs_a_predictor_over_a_dataset():
    images = torch.rand(5, 3, 8, 8)
    masks = (images[:, 0] > 0.5).long()
    masks[0, 0, 0] = 255  # ignored: counts nowhere
    dataset = torch.utils.data.TensorDataset(images, masks)
    spec = InferenceSpec(model="oracle", model_options={}, num_classes=2, class_names=("a", "b"),
                         palette=((0, 0, 0), (255, 0, 0)))
    predictions = {}
    result = evaluate(Predictor(Oracle(), spec, device="cpu", batch_size=2), dataset,
                      on_scored=lambda index, image, label, mask: predictions.setdefault(index, label))
    assert float(result.scores["miou"]) == 1.0
    assert int(result.confusion.sum()) == 5 * 64 - 1
    predicted = torch.stack([predictions[index] for index in range(5)]).long()
    assert torch.equal(predicted[masks != 255], masks[masks != 255])
    assert [row["file"] for row in result.per_image] == [f"item/{i:05d}" for i in range(5)]
    assert all(row["pixel_accuracy"] == 1.0 for row in result.per_image)


def test_pngs(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_miou": 0.2 * e,
             "val_pixel_accuracy": 0.5 + 0.1 * e, "lr": 1e-3 * 0.5 ** e} for e in range(4)]
    # Under a backend other than Agg (a notebook's, here svg), drawing the curves must not switch it.
    backend = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plot_training_curves(rows, tmp_path / "curves.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(backend)
    assert Image.open(tmp_path / "curves.png").size[0] > 600
    images = torch.rand(3, 3, 10, 12)
    masks = torch.randint(0, 3, (3, 10, 12))
    palette = ((0, 0, 0), (255, 0, 0), (0, 255, 0))
    save_prediction_grid(images, masks, masks, tmp_path / "grid.png", palette, ("background", "red", "green"), gap=2)
    grid = np.array(Image.open(tmp_path / "grid.png"))
    # Three rows of 10 px plus the column titles above them and the legend below.
    assert grid.shape[0] > 3 * 10 + 2 * 2 + 20 and grid.shape[1] >= 3 * 12 + 2 * 2
    windows = np.lib.stride_tricks.sliding_window_view(grid, (10, 12, 3))[:, :, 0]
    first = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert (windows == first).all(axis=(2, 3, 4)).any()
    assert (windows == np.asarray(palette, dtype=np.uint8)[masks[0].numpy()]).all(axis=(2, 3, 4)).sum() == 2
