"""Dataset layouts (find_splits), FolderOptions, and pairing with suffixes and sub-folders."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from data_fixtures import ISBI_DIR, LAYOUT_TREES, make_layout_tree, save_png
from seglab.data import (
    CITYSCAPES_CLASS_NAMES,
    CITYSCAPES_LABEL_IDS,
    LAYOUTS,
    FolderDataset,
    FolderOptions,
    SplitFolders,
    check_folders,
    find_splits,
    pair_files,
)
from seglab.data.files import MaskDecoder
from seglab.errors import ConfigError, DataError
from seglab.training.config import make_config

COUNTS = {"train": 3, "val": 2, "test": 1}


@pytest.mark.parametrize("tree", sorted(LAYOUT_TREES))
def test_auto_finds_each_layout_with_its_splits(tmp_path, tree):
    root = make_layout_tree(tmp_path / "data", tree, COUNTS)
    layout = find_splits(root)
    assert layout.name == ("images_masks" if tree == "isbi" else tree)
    assert find_splits(root, layout.name) == layout
    assert list(layout.splits) == ["train", "val", "test"]
    options = FolderOptions(value_map={7: 0, 26: 1}) if tree == "cityscapes" else FolderOptions(num_classes=2)
    for split, count in COUNTS.items():
        folders = layout.splits[split]
        assert folders.images_dir.is_relative_to(root) and folders.masks_dir.is_relative_to(root)
        dataset = FolderDataset(folders.images_dir, folders.masks_dir, folders.folder_options(options))
        assert len(dataset) == count
        image, mask = dataset[0]
        assert image.shape == (3, 6, 10) and mask.unique().tolist() == [0, 1]
    text = layout.describe(options)
    assert text.startswith(f"layout {layout.name} in {root}")
    for split, count in COUNTS.items():
        assert f"  {split}: " in text and f", {count} pairs" in text


def test_isbi_membrane_folder_is_found():
    if not (ISBI_DIR / "train" / "image").is_dir():
        pytest.skip(f"ISBI-2012 data not found at {ISBI_DIR}")
    layout = find_splits(ISBI_DIR)  # test_unlabeled/ has no masks: not a split
    assert layout.name == "images_masks" and list(layout.splits) == ["train"]
    assert "train: train/image/ + train/label/, 30 pairs" in layout.describe()


def test_cityscapes_pairs_recursively_by_suffix(tmp_path):
    root = make_layout_tree(tmp_path / "cs", "cityscapes", {"train": 4, "val": 2})
    layout = find_splits(root)
    train = layout.splits["train"]
    assert train == SplitFolders(
        root / "leftImg8bit" / "train", root / "gtFine" / "train", "_leftImg8bit", "_gtFine_labelIds", True
    )
    assert "leftImg8bit/train/ + gtFine/train/ (with sub-folders, *_leftImg8bit <-> *_gtFine_labelIds)" in (
        layout.describe()
    )
    # Two cities, each with label ids beside the colour and instance files, which are not masks.
    pairing = pair_files(
        train.images_dir, train.masks_dir, image_suffix="_leftImg8bit", mask_suffix="_gtFine_labelIds", recursive=True
    )
    assert len(pairing.pairs) == 4 and not pairing.masks_without_image and not pairing.duplicates
    assert {image.parent.name for image, _ in pairing.pairs} == {"aachen", "bremen"}
    assert all(m.name == i.name.replace("leftImg8bit", "gtFine_labelIds") for i, m in pairing.pairs)

    options = FolderOptions(value_map=CITYSCAPES_LABEL_IDS, class_names=list(CITYSCAPES_CLASS_NAMES))
    dataset = FolderDataset(train.images_dir, train.masks_dir, train.folder_options(options))
    assert dataset.num_classes == 19 and dataset[0][1].unique().tolist() == [0, 13]  # road, car
    # A suffix the user gives wins over the layout's (train ids made by cityscapesScripts, say).
    assert train.folder_options(FolderOptions(mask_suffix="_gtFine_labelTrainIds")).mask_suffix == (
        "_gtFine_labelTrainIds"
    )
    assert check_folders(train.images_dir, train.masks_dir, train.folder_options(options)).ok


def test_cityscapes_table_is_the_official_one():
    assert len(CITYSCAPES_CLASS_NAMES) == 19 and CITYSCAPES_CLASS_NAMES[:3] == ("road", "sidewalk", "building")
    assert set(CITYSCAPES_LABEL_IDS) == set(range(34))
    train_ids = {label: train for label, train in CITYSCAPES_LABEL_IDS.items() if train != 255}
    assert sorted(train_ids.values()) == list(range(19))
    assert train_ids[7] == 0 and train_ids[26] == 13 and train_ids[33] == 18 and CITYSCAPES_LABEL_IDS[0] == 255
    FolderOptions(value_map=CITYSCAPES_LABEL_IDS, class_names=list(CITYSCAPES_CLASS_NAMES)).check()


def test_layout_notes_and_splits_without_images(tmp_path):
    root = make_layout_tree(tmp_path / "d", "images_masks", {"train": 2})
    (root / "images" / "val").mkdir()  # an empty split is not a split
    (root / "masks" / "val").mkdir()
    save_png(root / "images" / "test" / "t.jpg", np.zeros((6, 10, 3), np.uint8))  # unlabelled test images
    layout = find_splits(root)
    assert list(layout.splits) == ["train"]
    assert "images/test/ has images but there is no masks/test/" in layout.describe()


def test_auto_refuses_several_layouts(tmp_path):
    root = make_layout_tree(tmp_path / "d", "images_masks", {"train": 1})
    make_layout_tree(root, "mmseg", {"train": 1})
    with pytest.raises(DataError, match="several dataset layouts") as info:
        find_splits(root)
    assert "images_masks: train = images/train/ + masks/train/" in str(info.value)
    assert "mmseg: train = img_dir/train/ + ann_dir/train/" in str(info.value) and "layout:" in str(info.value)
    assert find_splits(root, "mmseg").name == "mmseg"
    # Two mask folders for the same images: one layout, two readings.
    other = make_layout_tree(tmp_path / "e", "images_masks", {"train": 1})
    (other / "masks").rename(other / "labels")
    make_layout_tree(other, "images_masks", {"train": 1})
    with pytest.raises(DataError, match="keep one mask folder"):
        find_splits(other, "images_masks")


def test_no_layout_found_says_what_was_looked_for(tmp_path):
    root = tmp_path / "d"
    save_png(root / "photos" / "a.jpg", np.zeros((4, 4, 3), np.uint8))
    make_layout_tree(root, "mmseg", {"val": 1})  # train is required
    with pytest.raises(DataError) as info:
        find_splits(root)
    message = str(info.value)
    assert "it holds ann_dir/, img_dir/, photos/" in message and "--images / --masks" in message
    for name in LAYOUTS[1:]:
        assert f"  {name}: " in message
    assert "trainannot/" in message and "gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png" in message
    with pytest.raises(DataError, match="not a folder"):
        find_splits(root / "missing")


def test_explicit_layout_that_does_not_fit(tmp_path):
    root = make_layout_tree(tmp_path / "d", "segnet", {"train": 2, "val": 1})
    with pytest.raises(DataError, match=r"is not a mmseg dataset .*expected img_dir/.*looks like segnet"):
        find_splits(root, "mmseg")
    with pytest.raises(ConfigError, match="unknown dataset layout 'voc'"):
        find_splits(root, "voc")


def test_pairing_with_suffixes_and_sub_folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    pixel = np.zeros((4, 6, 3), np.uint8)
    for sub, stem in (("a", "x1"), ("b", "x2"), ("b/deep", "x3")):
        save_png(images / sub / f"{stem}_img.jpg", pixel)
        save_png(masks / sub / f"{stem}_mask.png", pixel[..., 0])
    save_png(masks / "a" / "x1_preview.png", pixel)  # not a mask: no mask suffix
    save_png(images / ".cache" / "x9_img.png", pixel)  # hidden folders are skipped
    assert not pair_files(images, masks, image_suffix="_img", mask_suffix="_mask").pairs  # top level only
    pairing = pair_files(images, masks, image_suffix="_img", mask_suffix="_mask", recursive=True)
    assert [i.name for i, _ in pairing.pairs] == ["x1_img.jpg", "x2_img.jpg", "x3_img.jpg"]
    assert not (pairing.images_without_mask or pairing.masks_without_image or pairing.duplicates)
    suffixed = FolderOptions(num_classes=1, image_suffix="_img", mask_suffix="_mask", recursive=True)
    dataset = FolderDataset(images, masks, suffixed)
    assert len(dataset) == 3 and dataset.options.recursive

    save_png(images / "x4.png", pixel)  # lacks the image suffix: reported, never silently dropped
    save_png(images / "c" / "x2_img.png", pixel)  # stems must be unique across sub-folders
    pairing = pair_files(images, masks, image_suffix="_img", mask_suffix="_mask", recursive=True)
    assert [p.name for p in pairing.images_without_mask] == ["x4.png"]
    assert [[p.name for p in group] for group in pairing.duplicates] == [["x2_img.jpg", "x2_img.png"]]
    with pytest.raises(DataError, match="several files share the stem 'x2_img'"):
        FolderDataset(images, masks, suffixed)
    report = check_folders(images, masks, suffixed)
    assert {(p.path.name, p.kind) for p in report.problems} == {
        ("x4.png", "unpaired"),
        ("x2_img.jpg", "duplicate-stem"),
    }
    assert "does not end with the image suffix '_img'" in report.summary()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"palette": {1: [255, 0]}}, r"palette colour \[255, 0\] of class 1"),
        ({"palette": {1: [256, 0, 0]}}, "three integers 0..255"),
        ({"palette": {1: "#ff00"}}, "#rrggbb"),
        ({"palette": {1: "red"}}, "#rrggbb"),
        ({"palette": {"1": "#ff0000"}}, "palette key '1'"),
        ({"palette": {0: "#ff0000", 1: [255, 0, 0]}}, "share one colour"),
        ({"value_map": {"0": 0}}, r"config key 'value_map' must be .*\(entry '0': 0 is not\)"),
        ({"value_map": {0: 1.5}}, r"\(entry 0: 1.5 is not\)"),
        ({"value_map": {70000: 1}}, "0..65535"),
        ({"value_map": {}}, "non-empty"),
        ({"value_map": {0: 0}, "palette": {0: "#000000"}}, "not both"),
        ({"num_classes": 0}, "config key 'num_classes' must be >= 1, got 0"),
        ({"class_names": "cat,dog"}, "'class_names' must be a non-empty list of distinct class names"),
        ({"class_names": ["cat", 3]}, "non-empty strings"),
        ({"class_names": ["cat", "cat"]}, r"'class_names' must be .*distinct.*, got \['cat', 'cat'\]"),
        ({"class_names": ["a", "b"], "num_classes": 3}, "num_classes=3 but 2 class names"),
        ({"value_map": {0: 0, 255: 2}, "class_names": ["a", "b"]}, r"classes \[2\], outside 0..1"),
        ({"ignore_index": -1}, "config key 'ignore_index' must be >= 0, got -1"),
        ({"mask_suffix": None}, "config key 'mask_suffix' must be str, got None"),
        ({"recursive": "yes"}, "config key 'recursive' must be true or false, got 'yes'"),
    ],
)
def test_folder_options_check_names_the_bad_value(values, message):
    with pytest.raises(ConfigError, match=message):
        FolderOptions(**values).check()


def test_folder_options_parse_and_round_trip_through_yaml():
    options = FolderOptions(palette={0: "#000000", 1: [255, 0, 0], 2: "#00FF00"}, ignore_index=254)
    options.check()
    assert options.palette_colours() == {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)}
    assert options.resolved_class_names() == ("class_0", "class_1", "class_2")
    decoder = MaskDecoder.from_options(options)
    assert decoder.num_classes == 3 and decoder.channels == "rgb" and decoder.ignore_index == 254
    assert FolderOptions().palette_colours() is None
    with pytest.raises(ConfigError, match="cannot tell how many classes"):
        FolderOptions().resolved_class_names()

    config = make_config({"value_map": {0: 0, 255: 1}, "class_names": ["bg", "fg"], "mask_suffix": "_mask"})
    options = config.data.folder  # how a training config composes the options, its file keys flat
    loaded = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert make_config(loaded) == config and loaded["mask_suffix"] == "_mask"
    assert MaskDecoder.from_options(options).value_map == {0: 0, 255: 1}
    split = SplitFolders("i", "m", mask_suffix="_gtFine_labelIds", recursive=True)
    assert split.folder_options(options).mask_suffix == "_mask" and split.folder_options(options).recursive


def test_dataset_reads_palette_strings(tmp_path):
    images, masks = tmp_path / "i", tmp_path / "m"
    save_png(images / "a.jpg", np.zeros((4, 6, 3), np.uint8))
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, 3:] = (255, 0, 0)
    save_png(masks / "a.png", rgb)
    options = FolderOptions(palette={0: "#000000", 1: "#ff0000"}, class_names=["bg", "red"])
    dataset = FolderDataset(images, masks, options)
    assert dataset.options is options and dataset[0][1][0].tolist() == [0, 0, 0, 1, 1, 1]
    assert check_folders(images, masks, options).class_pixels == [12, 12]
    with pytest.raises(ConfigError, match="palette colour"):
        FolderDataset(images, masks, FolderOptions(palette={0: "#000000", 1: "ff0000"}))
