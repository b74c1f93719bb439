"""PNG figures: training curves (loss, mIoU, learning rate per epoch), image / prediction / truth grids and the
confusion matrix.

Curves and the confusion matrix draw on their own matplotlib Agg canvas (no display needed, pyplot's backend
left as the caller set it); grids are drawn with PIL (column titles, a class legend and optional captions in
PIL's default font).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from seglab.atomic import atomic_path

# Grids show thumbnails: a few hundred large images must not fill the memory.
THUMBNAIL_HEIGHT = 160

Triplet = tuple[np.ndarray, np.ndarray, np.ndarray]  # image uint8 (H, W, 3), prediction (H, W), truth (H, W)
GridRow = Triplet | tuple[np.ndarray, np.ndarray, np.ndarray, str | None]  # a triplet, optionally with a caption

COLUMN_TITLES = ("image", "prediction", "truth")
IGNORED_NAME = "ignored"  # legend entry for labels outside the palette (ignore index, unknown values), drawn white
_FONT_SIZE = 14
_MARGIN = 6
_TEXT = (0, 0, 0)
_SWATCH_OUTLINE = (128, 128, 128)
_MIN_LEGEND_WIDTH = 320  # a narrow grid still gets a legend this wide, so class names stay readable


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=_FONT_SIZE)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _text_width(text: str) -> int:
    return math.ceil(_font().getlength(text))


def _fit_text(text: str, width: int) -> str:
    """`text`, shortened in the middle ("start...end") until it is at most `width` pixels wide."""
    if _text_width(text) <= width:
        return text
    low, high = 0, len(text)  # the number of characters kept; `low` always fits
    while low < high:
        keep = (low + high + 1) // 2
        if _text_width(_middle(text, keep)) <= width:
            low = keep
        else:
            high = keep - 1
    return _middle(text, low) if low else ""


def _middle(text: str, keep: int) -> str:
    head = (keep + 1) // 2
    return text[:head] + "..." + text[len(text) - (keep - head):]


def _column_groups(heights: Sequence[int], block_width: int, gap: int, group_gap: int,
                   rows_per_column: int) -> list[range]:
    """Rows split into columns of triplets, read top to bottom then left to right: at most `rows_per_column`
    a column, and more columns while the picture is taller than wide."""
    count = len(heights)
    for columns in range(max(1, math.ceil(count / rows_per_column)), count + 1):
        per_column = math.ceil(count / columns)
        groups = [range(first, min(first + per_column, count)) for first in range(0, count, per_column)]
        width = len(groups) * block_width + (len(groups) - 1) * group_gap
        height = max(sum(heights[i] for i in group) + gap * (len(group) - 1) for group in groups)
        if width >= height:
            break
    return groups


def triplet_grid(rows: Sequence[GridRow], palette: Sequence[Sequence[int]], class_names: Sequence[str], *,
                 gap: int = 4, rows_per_column: int = 4) -> np.ndarray:
    """The picture `save_triplet_grid` writes, as a uint8 (H, W, 3) array."""
    if len(class_names) != len(palette):
        raise ValueError(f"{len(class_names)} class names for {len(palette)} palette colours")
    if not rows:
        raise ValueError("no rows to draw")
    if rows_per_column < 1:
        raise ValueError(f"rows_per_column must be at least 1, not {rows_per_column}")
    count = len(palette)
    colours = np.vstack([np.asarray(palette, dtype=np.uint8).reshape(-1, 3), np.full((1, 3), 255, np.uint8)])
    cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    captions: list[str | None] = []
    ignored = False
    for index, (image, prediction, truth, *caption) in enumerate(rows):
        image, labels = np.asarray(image), [np.asarray(prediction), np.asarray(truth)]
        if image.ndim != 3 or image.shape[2] != 3 or any(part.shape != image.shape[:2] for part in labels):
            raise ValueError(f"row {index}: image {image.shape}, prediction {labels[0].shape} and truth "
                             f"{labels[1].shape} do not match as (H, W, 3), (H, W), (H, W)")
        known = [(part >= 0) & (part < count) for part in labels]
        ignored = ignored or not all(mask.all() for mask in known)
        # Labels outside the palette index the extra white row.
        predicted, true = (colours[np.where(mask, part, count)] for part, mask in zip(labels, known, strict=True))
        cells.append((image.astype(np.uint8), predicted, true))
        captions.append(caption[0] if caption else None)

    font = _font()
    line = int(font.getbbox("Ag")[3]) + 4  # Pillow's stubs type a FreeType box in floats; its values are whole
    cell_width = max(max(image.shape[1] for image, _, _ in cells), *(_text_width(t) + 4 for t in COLUMN_TITLES))
    block_width = 3 * cell_width + 2 * gap
    caption_height = line if any(caption for caption in captions) else 0
    heights = [image.shape[0] + caption_height for image, _, _ in cells]
    group_gap = max(4 * gap, 16)
    groups = _column_groups(heights, block_width, gap, group_gap, rows_per_column)
    grid_width = len(groups) * block_width + (len(groups) - 1) * group_gap
    grid_height = max(sum(heights[i] for i in group) + gap * (len(group) - 1) for group in groups)

    # The legend: swatch + name per class (and "ignored" if any label is outside the palette), wrapped into lines.
    swatch = line - 5
    entries = list(zip(class_names, palette, strict=True)) + ([(IGNORED_NAME, (255, 255, 255))] if ignored else [])
    widest = max(swatch + 4 + _text_width(name) for name, _ in entries)
    content_width = max(grid_width, min(widest, _MIN_LEGEND_WIDTH))
    legend_lines: list[list[tuple[str, Sequence[int], int]]] = [[]]  # (name, colour, x) per line
    x = 0
    for name, colour in entries:
        name = _fit_text(name, content_width - swatch - 4)
        width = swatch + 4 + _text_width(name)
        if legend_lines[-1] and x + width > content_width:
            legend_lines.append([])
            x = 0
        legend_lines[-1].append((name, colour, x))
        x += width + 14

    grid_top = _MARGIN + line
    legend_top = grid_top + grid_height + 2 * _MARGIN
    canvas = np.full((legend_top + len(legend_lines) * line + _MARGIN, content_width + 2 * _MARGIN, 3), 255,
                     dtype=np.uint8)
    text_at: list[tuple[int, int, str]] = []
    for number, group in enumerate(groups):
        left = _MARGIN + number * (block_width + group_gap)
        for column, title in enumerate(COLUMN_TITLES):
            text_at.append((left + column * (cell_width + gap) + (cell_width - _text_width(title)) // 2,
                            _MARGIN, title))
        top = grid_top
        for index in group:
            row_caption = captions[index]
            if row_caption:
                text_at.append((left, top, _fit_text(row_caption, block_width)))
            for column, cell in enumerate(cells[index]):
                height, width = cell.shape[:2]
                x = left + column * (cell_width + gap) + (cell_width - width) // 2
                canvas[top + caption_height:top + caption_height + height, x:x + width] = cell
            top += heights[index] + gap

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for x, y, text in text_at:
        draw.text((x, y), text, fill=_TEXT, font=font)
    for number, entries_on_line in enumerate(legend_lines):
        y = legend_top + number * line
        for name, colour, x in entries_on_line:
            x += _MARGIN
            draw.rectangle((x, y + 1, x + swatch - 1, y + swatch), fill=tuple(int(c) for c in colour),
                           outline=_SWATCH_OUTLINE)
            draw.text((x + swatch + 4, y), name, fill=_TEXT, font=font)
    return np.array(picture)


def thumbnail(image: torch.Tensor, prediction: np.ndarray, truth: np.ndarray, height: int = THUMBNAIL_HEIGHT
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image (uint8 HxWx3), prediction and truth brought to `height` rows (aspect kept) for a grid."""
    rows, cols = prediction.shape
    width = max(1, round(cols * height / rows))
    rgb = Image.fromarray((image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR)

    def nearest(labels: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(labels.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST))

    return np.asarray(rgb), nearest(prediction), nearest(truth)


def spread_indices(length: int, count: int) -> list[int]:
    """`count` indices spread evenly over `range(length)`, first and last included (`round(i * (length - 1) /
    (count - 1))`), the same every time: a split's first images are often consecutive frames of one video or one
    street, and would show one scene `count` times."""
    if count >= length:
        return list(range(length))
    if count <= 1:
        return [0][:count]
    return [round(i * (length - 1) / (count - 1)) for i in range(count)]


def save_triplet_grid(rows: Sequence[GridRow], palette: Sequence[Sequence[int]], class_names: Sequence[str],
                      path: str | Path, *, gap: int = 4, rows_per_column: int = 4) -> None:
    """Image | prediction | truth per row, titled, with a class legend, as a PNG.

    Rows are `(image, prediction, truth)` or `(image, prediction, truth, caption)`: an RGB uint8 (H, W, 3) image
    and two (H, W) label maps; items may differ in size. Label maps are drawn in `palette` colours (one per entry
    of `class_names`), labels outside it (e.g. ignore 255) white and named "ignored" in the legend. A caption
    (e.g. file name and IoU) is written above its row. Long grids are laid out in several columns of at most
    `rows_per_column` triplets, so that the picture is about as wide as tall or wider.
    """
    with atomic_path(path) as temporary:
        Image.fromarray(triplet_grid(rows, palette, class_names, gap=gap,
                                     rows_per_column=rows_per_column)).save(temporary)


def save_prediction_grid(images: torch.Tensor, predictions: torch.Tensor, truths: torch.Tensor,
                         path: str | Path, palette: Sequence[Sequence[int]], class_names: Sequence[str], *,
                         gap: int = 4) -> None:
    """`save_triplet_grid` for batches: images (N, 3, H, W) in [0, 1], label maps (N, H, W); up to 8 rows."""
    count = min(len(images), 8)
    rows = [((images[i].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8),
             predictions[i].cpu().numpy(), truths[i].cpu().numpy()) for i in range(count)]
    save_triplet_grid(rows, palette, class_names, path, gap=gap)


def plot_training_curves(rows: Sequence[Mapping[str, float]], path: str | Path) -> None:
    """Three panels against epoch: train/val loss, val mIoU (and pixel accuracy), learning rate."""
    # An explicit Figure on an Agg canvas draws without pyplot, so a notebook's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        return
    epochs = [row["epoch"] + 1 for row in rows]

    def column(name: str) -> list[float]:
        return [row.get(name, float("nan")) for row in rows]

    figure = Figure(figsize=(13, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90)


def save_confusion_matrix_png(confusion: torch.Tensor | np.ndarray, class_names: Sequence[str],
                              path: str | Path) -> None:
    """The confusion matrix as a heat map, each true-class row normalised to sum to 1 (`row_normalised`).

    Truth on the y axis, prediction on the x axis, the fraction written in each cell; a class with no true
    pixels is an empty row. The figure grows with the number of classes so the names stay readable.
    """
    # An explicit Figure on an Agg canvas draws without pyplot, so a notebook's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from seglab.evaluation.scores import row_normalised

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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100)
