"""PNG figures: training curves (loss, mIoU, learning rate per epoch) and image / prediction / truth grids.

Curves use matplotlib's Agg backend (no display needed); grids are drawn with PIL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Background black, then well-separated hues; classes beyond the table get hashed colours.
_BASE_PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
                 (70, 240, 240), (245, 130, 48), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def palette(num_classes: int) -> np.ndarray:
    """(256, 3) uint8 colours: one per class index, the rest (e.g. ignore_index 255) white."""
    colours = np.full((256, 3), 255, dtype=np.uint8)
    for index in range(min(num_classes, 255)):
        if index < len(_BASE_PALETTE):
            colours[index] = _BASE_PALETTE[index]
        else:
            colours[index] = [(index * 97) % 256, (index * 57) % 256, (index * 193) % 256]
    return colours


def save_mask_png(mask: torch.Tensor | np.ndarray, path: str | Path, num_classes: int) -> None:
    """A label map as a palette PNG: pixel values are class indices, shown in the `palette` colours."""
    array = np.asarray(mask, dtype=np.uint8)
    image = Image.fromarray(array, mode="P")
    image.putpalette(palette(num_classes).flatten().tolist())
    image.save(path)


def save_prediction_grid(images: torch.Tensor, predictions: torch.Tensor, truths: torch.Tensor,
                         path: str | Path, num_classes: int, *, gap: int = 4) -> None:
    """Rows of image | prediction | truth for up to the first 8 items; images (N,3,H,W) in [0, 1]."""
    colours = palette(num_classes)
    count = min(len(images), 8)
    height, width = images.shape[-2:]
    canvas = np.full((count * (height + gap) - gap, 3 * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for row in range(count):
        image = (images[row].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        cells = (image, colours[predictions[row].cpu().numpy().astype(np.uint8)],
                 colours[truths[row].cpu().numpy().astype(np.uint8)])
        top = row * (height + gap)
        for column, cell in enumerate(cells):
            left = column * (width + gap)
            canvas[top:top + height, left:left + width] = cell
    Image.fromarray(canvas).save(path)


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
