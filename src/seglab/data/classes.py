"""What a label map says about its classes: pixels per class, and the display colours every dataset carries.

Each dataset's `palette` (one RGB colour per class) is the one its masks are drawn in everywhere: exported
masks, predicted masks, overlays and grids. Training copies it into every checkpoint's `InferenceSpec`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from seglab.errors import ConfigError

RGB = tuple[int, int, int]

# Background black, then well-separated hues; classes beyond the table get hashed colours.
_BASE_PALETTE: tuple[RGB, ...] = (
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
    (70, 240, 240), (245, 130, 48), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)


def class_pixel_counts(mask: ArrayLike, num_classes: int, ignore_index: int) -> np.ndarray:
    """Labelled pixels per class of one label map (a numpy array or a CPU tensor), `ignore_index` left out:
    int64, of length `num_classes`. A label of `num_classes` or more is a `ConfigError`."""
    labels = np.asarray(mask).ravel()
    labels = labels[labels != ignore_index]
    if labels.size and int(labels.max()) >= num_classes:
        raise ConfigError(f"mask holds class {int(labels.max())} but the model has {num_classes} classes")
    return np.bincount(labels, minlength=num_classes).astype(np.int64)


def default_palette(num_classes: int) -> tuple[RGB, ...]:
    """One display colour per class, for datasets whose masks bring none of their own."""
    return tuple(
        _BASE_PALETTE[index] if index < len(_BASE_PALETTE)
        else ((index * 97) % 256, (index * 57) % 256, (index * 193) % 256)
        for index in range(num_classes)
    )


def colour_table(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(256, 3) uint8 lookup table: `palette` for the class indices, white for the rest (e.g. ignore 255)."""
    table = np.full((256, 3), 255, dtype=np.uint8)
    table[:len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return table


def indexed_image(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """A class map as an indexed ("P") image: pixel values are the class indices (0..255), `palette` only colours
    them (other values white)."""
    image = Image.fromarray(np.asarray(mask).astype(np.uint8), mode="P")
    image.putpalette(colour_table(palette).flatten().tolist())
    return image
