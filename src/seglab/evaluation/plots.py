"""PNG figures: training curves (loss, mIoU, learning rate per epoch), image / prediction / truth grids and the
confusion matrix.

Curves and the confusion matrix use matplotlib's Agg backend (no display needed); grids are drawn with PIL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seglab.inference.spec import colour_table

Triplet = tuple[np.ndarray, np.ndarray, np.ndarray]  # image uint8 (H, W, 3), prediction (H, W), truth (H, W)


def save_triplet_grid(rows: Sequence[Triplet], palette: Sequence[Sequence[int]], path: str | Path, *,
                      gap: int = 4) -> None:
    """One row of image | prediction | truth per item (items may differ in size), classes in `palette`
    colours and ignored / unknown labels white."""
    colours = colour_table(palette)
    heights = [image.shape[0] for image, _, _ in rows]
    widths = [image.shape[1] for image, _, _ in rows]
    canvas = np.full((sum(heights) + gap * (len(rows) - 1), 3 * max(widths) + 2 * gap, 3), 255, dtype=np.uint8)
    top = 0
    for (image, prediction, truth), height, width in zip(rows, heights, widths, strict=True):
        for column, cell in enumerate((image, colours[np.asarray(prediction)], colours[np.asarray(truth)])):
            left = column * (max(widths) + gap)
            canvas[top:top + height, left:left + width] = cell
        top += height + gap
    Image.fromarray(canvas).save(path)


def save_prediction_grid(images: torch.Tensor, predictions: torch.Tensor, truths: torch.Tensor,
                         path: str | Path, palette: Sequence[Sequence[int]], *, gap: int = 4) -> None:
    """`save_triplet_grid` for batches: images (N, 3, H, W) in [0, 1], label maps (N, H, W); up to 8 rows."""
    count = min(len(images), 8)
    rows = [((images[i].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8),
             predictions[i].cpu().numpy(), truths[i].cpu().numpy()) for i in range(count)]
    save_triplet_grid(rows, palette, path, gap=gap)


def plot_training_curves(rows: Sequence[Mapping[str, float]], path: str | Path) -> None:
    """Three panels against epoch: train/val loss, val mIoU (and pixel accuracy), learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    epochs = [row["epoch"] + 1 for row in rows]

    def column(name: str) -> list[float]:
        return [row.get(name, float("nan")) for row in rows]

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, column("train_loss"), marker="o", label="train")
    axes[0].plot(epochs, column("val_loss"), marker="o", label="val")
    axes[0].set_title("loss")
    axes[1].plot(epochs, column("val_miou"), marker="o", label="val mIoU")
    axes[1].plot(epochs, column("val_pixel_accuracy"), marker=".", linestyle="--", label="val pixel accuracy")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("validation")
    axes[2].plot(epochs, column("lr"), marker="o")
    if all(lr > 0 for lr in column("lr")):
        axes[2].set_yscale("log")
    axes[2].set_title("learning rate (end of epoch)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def save_confusion_matrix_png(confusion: torch.Tensor | np.ndarray, class_names: Sequence[str],
                              path: str | Path) -> None:
    """The confusion matrix as a heat map, each true-class row normalised to sum to 1 (`row_normalised`).

    Truth on the y axis, prediction on the x axis, the fraction written in each cell; a class with no true
    pixels is an empty row. The figure grows with the number of classes so the names stay readable.
    """
    # An explicit Figure on an Agg canvas draws without pyplot, so a notebook's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from seglab.evaluation.outputs import row_normalised

    fractions = row_normalised(confusion)
    count = len(class_names)
    if fractions.shape != (count, count):
        raise ValueError(f"confusion shape {fractions.shape} does not match {count} class names")
    has_pixels = fractions.sum(axis=1) > 0
    # About 0.6 inch per cell (the matrix 3.5 to 30 inches wide), plus room for the longest name beside the matrix
    # (horizontal, about 0.09 inch a character at 10 pt) and under it (at 45 degrees), the titles and the colour bar.
    cell = min(0.6, 30 / max(count, 1))
    side = max(3.5, cell * count)
    name_inches = 0.09 * max((len(name) for name in class_names), default=0)
    figure = Figure(figsize=(side + name_inches + 2.4, side + 0.75 * name_inches + 1.2), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    image = axis.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class's pixels")
    axis.set_xticks(range(count), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    axis.set_yticks(range(count), labels=class_names)
    axis.tick_params(labelsize=max(4.0, min(10.0, cell * 72 * 0.55)))  # names no taller than their cell
    axis.set_xlabel("prediction")
    axis.set_ylabel("truth")
    axis.set_title("confusion matrix (rows sum to 1)")
    font_size = max(4.0, min(9.0, cell * 72 * 0.3))
    for row in range(count):
        if not has_pixels[row]:
            continue
        for column in range(count):
            value = fractions[row, column]
            axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=font_size,
                      color="white" if value > 0.5 else "black")
    figure.savefig(path, dpi=100)
