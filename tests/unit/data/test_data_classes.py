"""Class pixel counts and palettes: one rule each (`seglab.data.classes`), used by every dataset and writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import FolderDataset, FolderOptions, OxfordPets, ShapesDataset, export_shapes
from seglab.data.classes import class_pixel_counts, default_palette
from seglab.errors import ConfigError
from seglab.inference.files import save_mask_png

MASK = np.array([[0, 0, 2, 255], [2, 2, 255, 255]])


@pytest.mark.parametrize("as_type", [np.asarray, torch.from_numpy], ids=["numpy", "torch"])
def test_class_pixel_counts_leave_out_the_ignore_index(as_type):
    counts = class_pixel_counts(as_type(MASK), 4, 255)
    assert counts.tolist() == [2, 0, 3, 0] and counts.dtype == np.int64


def test_a_label_beyond_the_classes_is_refused():
    with pytest.raises(ConfigError, match="mask holds class 2 but the model has 2 classes"):
        class_pixel_counts(MASK, 2, 255)


def test_exported_shapes_masks_and_predicted_masks_share_the_dataset_palette(tmp_path):
    export_shapes(tmp_path, size=16, counts={"val": 1})
    exported = Image.open(tmp_path / "val_mask" / "00000.png")
    _, mask = ShapesDataset("val", size=16)[0]
    save_mask_png(mask, tmp_path / "predicted.png", ShapesDataset.palette)
    predicted = Image.open(tmp_path / "predicted.png")
    classes = len(ShapesDataset.palette)
    assert exported.getpalette() == predicted.getpalette()  # ignore (255) and unused indices white in both
    assert exported.getpalette()[:3 * classes] == [c for colour in ShapesDataset.palette for c in colour]
    assert exported.getpalette()[3 * 255:] == [255, 255, 255]


def test_every_dataset_carries_a_palette(tmp_path):
    assert OxfordPets.palette == default_palette(3)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "a.png")
    Image.fromarray(np.eye(4, dtype=np.uint8)).save(masks / "a.png")
    assert FolderDataset(images, masks, FolderOptions(num_classes=2)).palette == default_palette(2)
    rgb_masks = tmp_path / "rgb"
    rgb_masks.mkdir()
    Image.fromarray(np.eye(4, dtype=np.uint8)[..., None].repeat(3, axis=2) * 9).save(rgb_masks / "a.png")
    coded = FolderDataset(images, rgb_masks, FolderOptions(palette={0: (0, 0, 0), 1: (9, 9, 9)}))
    assert coded.palette == ((0, 0, 0), (9, 9, 9))
