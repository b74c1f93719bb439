"""A `lists` layout whose lines name both files (`image mask`), with no mask folder to pair by stem: the
datasets read the pairs the lines give (pyright found that a split without a mask folder reached
`Path(None)` in `FolderDataset`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.datasets import build_datasets
from seglab.data.folder import FolderDataset
from seglab.data.options import DataOptions, FolderOptions
from seglab.errors import ConfigError


def write_tree(root: Path) -> None:
    (root / "photos").mkdir(parents=True)
    (root / "truth").mkdir()
    lines = []
    for index, name in enumerate(("a", "b", "c")):
        Image.fromarray(np.full((16, 16, 3), 40 * index, np.uint8)).save(root / "photos" / f"{name}.png")
        Image.fromarray(np.full((16, 16), index % 2, np.uint8)).save(root / "truth" / f"{name}_gt.png")
        lines.append(f"photos/{name}.png truth/{name}_gt.png")
    (root / "train.txt").write_text("\n".join(lines[:2]) + "\n")
    (root / "val.txt").write_text(lines[2] + "\n")


def test_list_lines_that_name_each_mask_need_no_mask_folder(tmp_path: Path) -> None:
    write_tree(tmp_path)
    options = DataOptions(dataset="folder", data_root=str(tmp_path), layout="lists", image_size=None,
                          folder=FolderOptions(num_classes=2))
    datasets = build_datasets(options, echo=lambda text: None)
    assert sorted(datasets) == ["train", "val"]
    train = datasets["train"]
    assert isinstance(train, FolderDataset) and train.masks_dir is None
    assert [(image.name, mask.name) for image, mask in train.pairs] == [("a.png", "a_gt.png"), ("b.png", "b_gt.png")]
    _, mask = datasets["val"][0]
    assert mask.shape == (16, 16) and int(mask.max()) == 0  # c: index 2, label 2 % 2


def test_a_folder_dataset_without_masks_or_pairs_says_what_it_needs(tmp_path: Path) -> None:
    write_tree(tmp_path)
    with pytest.raises(ConfigError, match="need a mask folder, or a split list naming each mask"):
        FolderDataset(tmp_path / "photos", None, FolderOptions(num_classes=2))
