"""Datasets as published: split list files (the `lists` layout), RGBA colour masks and `seglab data check --config`.

The tiny tree is LabelMeFacade's shape: images/NAME.png, labels/NAME.png (RGBA, colour-coded), train.txt and
test.txt naming `images/NAME.png`, landscape and portrait images side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from data_fixtures import REPO_ROOT
from seglab.cli import main
from seglab.data.datasets import build_datasets
from seglab.data.files import FileProblem, MaskDecoder
from seglab.data.folder import FolderDataset
from seglab.data.layouts import find_splits
from seglab.data.options import DataOptions, FolderOptions
from seglab.data.pairing import pair_list
from seglab.errors import DataError

PALETTE = {0: [0, 0, 0], 1: [128, 0, 0], 2: [0, 128, 128]}
NAMES = ["various", "building", "sky"]
OPTIONS = FolderOptions(palette=PALETTE, class_names=NAMES)


def classes_of(index: int, height: int, width: int) -> np.ndarray:
    """A different class map per image: a band of sky on top, a building block, the rest various."""
    classes = np.zeros((height, width), np.int64)
    classes[: 4 + index, :] = 2
    classes[10:, index: index + 12] = 1
    return classes


def write_pair(root: Path, name: str, index: int, *, portrait: bool, alpha: int = 255) -> np.ndarray:
    height, width = (48, 32) if portrait else (32, 48)
    classes = classes_of(index, height, width)
    colours = np.array([PALETTE[c] for c in range(len(PALETTE))], np.uint8)[classes]
    rgba = np.concatenate([colours, np.full((height, width, 1), 255, np.uint8)], axis=2)
    rgba[-2:, -2:, 3] = alpha  # opaque unless a test makes a corner transparent
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images" / f"{name}.png")
    Image.fromarray(rgba, "RGBA").save(root / "labels" / f"{name}.png")
    return classes


def facade_tree(root: Path) -> dict[str, np.ndarray]:
    """Six pairs; train.txt lists four (one with its mask's path, plus a comment and a blank line), test.txt two."""
    truth = {f"f{i}": write_pair(root, f"f{i}", i, portrait=i % 2 == 1) for i in range(6)}
    (root / "train.txt").write_text("# the authors' training images\nimages/f0.png\nimages/f1.png labels/f1.png\n"
                                    "\nimages/f2.png  # a trailing comment\nimages/f3.png\n")
    (root / "test.txt").write_text("images/f4.png\nimages/f5.png\n")
    return truth


def test_lists_layout_reads_published_splits(tmp_path):
    truth = facade_tree(tmp_path)
    layout = find_splits(tmp_path)  # auto recognises the list files
    assert layout.name == "lists" and set(layout.splits) == {"train", "test"}
    text = layout.describe(OPTIONS)
    assert "train: train.txt (masks by stem in labels/" in text and "4 pairs" in text and "2 pairs" in text
    options = DataOptions(dataset="folder", data_root=str(tmp_path), folder=OPTIONS, image_size=None,
                          val_fraction=0.25)
    datasets = build_datasets(options, seed=0, echo=lambda _: None)
    assert (len(datasets["train"]), len(datasets["val"]), len(datasets["test"])) == (3, 1, 2)
    test = datasets["test"]
    assert [p[0].name for p in test.pairs] == ["f4.png", "f5.png"]  # list order, each image at its own size
    for index, name in enumerate(["f4", "f5"]):
        image, mask = test[index]
        assert image.shape[1:] == mask.shape == truth[name].shape
        assert np.array_equal(mask.numpy(), truth[name])  # opaque RGBA decoded by the palette
    # A checkpoint's saved config (flat keys) rebuilds the same options, split lists included.
    with_lists = DataOptions(**{**options.__dict__, "split_lists": {"train": "train.txt"}})
    assert DataOptions.from_flat(with_lists.to_flat()) == with_lists


def test_split_lists_key_points_at_list_files_elsewhere(tmp_path):
    facade_tree(tmp_path)
    (tmp_path / "resplit").mkdir()
    (tmp_path / "resplit" / "train.txt").write_text("images/f0.png\nimages/f1.png\nimages/f2.png\n")
    (tmp_path / "resplit" / "val.txt").write_text("images/f3.png\n")
    lists = {"train": "resplit/train.txt", "val": "resplit/val.txt", "test": str(tmp_path / "test.txt")}
    options = DataOptions(dataset="folder", data_root=str(tmp_path), layout="lists", split_lists=lists,
                          folder=OPTIONS, image_size=None)
    datasets = build_datasets(options, echo=lambda _: None)
    assert {split: [p[0].name for p in d.pairs] for split, d in datasets.items()} == {
        "train": ["f0.png", "f1.png", "f2.png"], "val": ["f3.png"], "test": ["f4.png", "f5.png"]}
    # An image listed in two splits is flagged: its scores would not be held out.
    (tmp_path / "resplit" / "val.txt").write_text("images/f3.png\nimages/f2.png\n")
    with pytest.warns(UserWarning, match=r"1 images are in both the train and the val split \(e.g. .*f2.png\)"):
        build_datasets(options, echo=lambda _: None)
    with pytest.raises(DataError, match=r"val: .*nowhere.txt .*resolved against data_root"):
        find_splits(tmp_path, "lists", {"train": "train.txt", "val": "nowhere.txt"})


def test_list_file_errors_name_the_file_and_line(tmp_path):
    facade_tree(tmp_path)
    (tmp_path / "labels" / "f3.png").unlink()
    bad = tmp_path / "train.txt"
    bad.write_text("images/f0.png\nimages/gone.png\nimages/f3.png\nimages/f0.png\n"
                   "images/f1.png labels/nomask.png\nimages/f2.png labels/f2.png extra\n")
    pairing = pair_list(bad, tmp_path, tmp_path / "labels", OPTIONS)
    assert [p[0].name for p in pairing.pairs] == ["f0.png"]
    found = [(problem.kind, problem.detail.split(":")[0]) for problem in pairing.problems]
    assert found == [("missing", "line 2"), ("unpaired", "line 3"), ("duplicate-stem", "line 4 repeats a file of "
                     "line 1 (images/f0.png); list each pair once"), ("missing", "line 5"), ("unreadable", "line 6 "
                     "has 3 fields; write an image path, optionally followed by its mask's path (paths with spaces "
                     "cannot be listed)")]
    assert all(str(problem).startswith(str(bad)) for problem in pairing.problems)
    assert "no mask with the stem 'f3' in" in pairing.problems[1].detail
    with pytest.raises(DataError, match=r"(?s)train.txt: line 2: images/gone.png names no file.*line 4 repeats"):
        FolderDataset(tmp_path, tmp_path / "labels", OPTIONS, pairing=pairing)


def test_rgba_masks_opaque_read_transparent_refused(tmp_path):
    opaque = write_pair(tmp_path / "a", "opaque", 1, portrait=False)
    write_pair(tmp_path / "b", "holes", 1, portrait=False, alpha=0)
    decoder = MaskDecoder.from_options(OPTIONS)
    assert np.array_equal(decoder.read(tmp_path / "a" / "labels" / "opaque.png"), opaque)
    with pytest.raises(FileProblem, match=r"holes.png: has 4 transparent or translucent pixels") as raised:
        decoder.read(tmp_path / "b" / "labels" / "holes.png")
    assert raised.value.kind == "mask-alpha"


def test_data_check_reads_a_training_config(tmp_path, capsys):
    facade_tree(tmp_path / "facade")
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump({"dataset": "folder", "data_root": "elsewhere", "layout": "lists",
                                      "palette": PALETTE, "class_names": NAMES, "image_size": None,
                                      "crop_size": [32, 32]}))
    assert main(["data", "check", "--config", str(config), "--set", f"data_root={tmp_path / 'facade'}"]) == 0
    out = capsys.readouterr().out
    assert "no val split: training holds out val_fraction 0.2" in out
    assert "== train: train.txt" in out and "== test: test.txt" in out and "no problems in train, test" in out
    assert "4 pairs found, 4 without problems" in out and "various" in out and "sky" in out
    write_pair(tmp_path / "facade", "f5", 5, portrait=True, alpha=128)  # a test mask with translucent pixels
    assert main(["data", "check", "--config", str(config), "--set", f"data_root={tmp_path / 'facade'}"]) == 1
    out = capsys.readouterr().out
    assert "problem [mask-alpha]" in out and "f5.png" in out and "problems in test" in out
    # The config's mask options are the ones checked: flags that would contradict them are refused.
    assert main(["data", "check", "--config", str(config), "--num-classes", "3"]) == 2
    assert "with --config the mask options come from the config" in capsys.readouterr().err


def load_facade_split():
    import importlib.util

    path = REPO_ROOT / "benchmarks" / "facade_split.py"
    spec = importlib.util.spec_from_file_location("facade_split", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_facade_resplit_is_fixed_and_disjoint():
    facade = load_facade_split()
    train = [f"images/train_{i}.jpg" for i in range(100)]
    test = [f"images/test_{i}.jpg" for i in range(845)]
    lists = facade.resplit(train, test)
    assert {split: len(lines) for split, lines in lists.items()} == {"train": 545, "val": 100, "test": 300}
    assert sorted(line for lines in lists.values() for line in lines) == sorted(train + test)  # each image once
    assert lists["train"][:100] == train and lists["val"] == sorted(lists["val"], key=test.index)
    assert facade.resplit(train, test) == lists  # seeded: the same lists every time
    # The committed lists are the script's output on the authors' lists (checked where the data is).
    shared = REPO_ROOT.parent / "shared" / "data" / "labelmefacade"  # ../shared, as README
    if (shared / "test.txt").is_file():
        written = facade.resplit(facade.read_list(shared / "train.txt"), facade.read_list(shared / "test.txt"))
        assert written == {split: facade.read_list(facade.OUT / f"{split}.txt") for split in written}
