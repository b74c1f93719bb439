"""FolderDataset: pairing by stem, mask encodings, resizing, clear errors, and the real ISBI-2012 folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data_fixtures import ISBI_DIR, png_header_only, save_png
from seglab.data import FileProblem, FolderDataset, FolderOptions, pair_files
from seglab.errors import ConfigError, DataError

# Stems in an order where sorting pairs the wrong files: "10" < "2" as text, and masks use another extension.
STEMS = ["10", "2", "img_b", "img_a"]


def _labelled_folders(tmp_path, *, mask_ext: str = ".png", sizes=None):
    # Each image's colour and its mask's class follow from its stem, so a wrong pairing is visible.
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i, stem in enumerate(STEMS):
        height, width = (sizes or {}).get(stem, (12, 16))
        cls = i % 3
        rgb = np.full((height, width, 3), 60 * cls, dtype=np.uint8)
        Image.fromarray(rgb).save(images / f"{stem}{'.jpg' if i % 2 else '.png'}", quality=95)
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[height // 2 :] = cls
        Image.fromarray(mask).save(masks / f"{stem}{mask_ext}")
    return images, masks


def test_pairs_by_stem_not_by_order(tmp_path):
    images, masks = _labelled_folders(tmp_path)
    (images / ".DS_Store").write_bytes(b"junk")
    (images / "._10.png").write_bytes(b"junk")
    dataset = FolderDataset(images, masks, FolderOptions(class_names=["zero", "one", "two"]))
    assert [p[0].stem for p in dataset.pairs] == ["2", "10", "img_a", "img_b"]  # natural order
    for index in range(len(dataset)):
        image, mask = dataset[index]
        cls = int(mask.max())
        assert abs(float(image[0, 0, 0]) - 60 * cls / 255) < 0.03
        assert dataset.pairs[index][0].stem == dataset.pairs[index][1].stem
    assert dataset.num_classes == 3 and dataset.class_names == ("zero", "one", "two") and dataset.ignore_index == 255


def test_unpaired_files_are_reported_or_skipped(tmp_path):
    images, masks = _labelled_folders(tmp_path)
    save_png(images / "orphan_image.png", np.zeros((4, 4, 3), np.uint8))
    save_png(masks / "orphan_mask.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError) as info:
        FolderDataset(images, masks, FolderOptions(num_classes=3))
    assert "orphan_image.png" in str(info.value) and "orphan_mask.png" in str(info.value)
    assert "1 images without a mask" in str(info.value)
    dataset = FolderDataset(images, masks, FolderOptions(num_classes=3, allow_unpaired=True))
    assert len(dataset) == 4
    pairing = pair_files(images, masks)
    assert [p.name for p in pairing.images_without_mask] == ["orphan_image.png"]


def test_mask_suffix(tmp_path):
    images, masks = _labelled_folders(tmp_path)
    for path in list(masks.iterdir()):
        path.rename(masks / f"{path.stem}_mask.png")
    assert len(FolderDataset(images, masks, FolderOptions(num_classes=3, mask_suffix="_mask"))) == 4
    with pytest.raises(DataError, match="without a mask"):
        FolderDataset(images, masks, FolderOptions(num_classes=3))


def test_value_map_palette_and_ignore(tmp_path):
    images, masks = tmp_path / "i", tmp_path / "m"
    save_png(images / "a.png", np.zeros((6, 6, 3), np.uint8))
    grey = np.array([[0, 255, 128]] * 6, dtype=np.uint8).repeat(2, axis=1)
    save_png(masks / "a.png", grey)
    dataset = FolderDataset(images, masks, FolderOptions(value_map={0: 0, 255: 1, 128: 255}, class_names=["bg", "fg"]))
    assert dataset[0][1][0].tolist() == [0, 0, 1, 1, 255, 255]
    with pytest.raises(FileProblem, match=r"a\.png.*\[128\].*value map"):
        FolderDataset(images, masks, FolderOptions(value_map={0: 0, 255: 1}))[0]

    colours = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)}
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[:, 2:4] = colours[1]
    rgb[:, 4:] = colours[2]
    save_png(masks / "a.png", rgb)
    dataset = FolderDataset(images, masks, FolderOptions(palette=colours))
    assert dataset.class_names == ("class_0", "class_1", "class_2")
    assert dataset[0][1][0].tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(FileProblem, match="#00ff00"):
        FolderDataset(images, masks, FolderOptions(palette={0: (0, 0, 0), 1: (255, 0, 0)}))[0]
    with pytest.raises(FileProblem, match="multi-channel"):
        FolderDataset(images, masks, FolderOptions(num_classes=3))[0]  # RGB mask where indices are expected


def test_index_masks_out_of_range_and_16_bit(tmp_path):
    images, masks = tmp_path / "i", tmp_path / "m"
    save_png(images / "a.png", np.zeros((4, 4, 3), np.uint8))
    save_png(masks / "a.png", np.full((4, 4), 7, np.uint8))
    with pytest.raises(FileProblem, match=r"a\.png.*\[7\] outside the classes 0\.\.2"):
        FolderDataset(images, masks, FolderOptions(num_classes=3))[0]
    Image.fromarray(np.full((4, 4), 1, np.uint16)).save(masks / "a.png")
    with pytest.raises(FileProblem, match="16-bit"):
        FolderDataset(images, masks, FolderOptions(num_classes=3))[0]
    with pytest.raises(ConfigError, match="class_names"):
        FolderDataset(images, masks)


def test_fixed_size_makes_batches_of_varying_files(tmp_path):
    images, masks = _labelled_folders(tmp_path, sizes={"10": (20, 30), "img_b": (9, 7)})
    dataset = FolderDataset(images, masks, FolderOptions(num_classes=3), size=(16, 24))
    batch_images, batch_masks = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch_images.shape == (4, 3, 16, 24) and batch_masks.shape == (4, 16, 24)
    assert batch_masks.dtype == torch.int64 and set(batch_masks.unique().tolist()) <= {0, 1, 2}
    boxed = FolderDataset(images, masks, FolderOptions(num_classes=3), size=24, keep_aspect=True)
    _, mask = boxed[[p[0].stem for p in boxed.pairs].index("10")]  # 30x20 -> 24x16 + 8 rows of padding
    assert mask.shape == (24, 24) and (mask[16:] == 255).all() and (mask[:16] != 255).all()
    # size=None keeps the size
    assert FolderDataset(images, masks, FolderOptions(num_classes=3))[0][0].shape == (3, 12, 16)


def test_broken_files_raise_specific_errors(tmp_path):
    images, masks = tmp_path / "i", tmp_path / "m"
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # incompressible: a long file
    save_png(images / "a.png", noise)
    save_png(masks / "a.png", np.zeros((32, 33), np.uint8))
    dataset = FolderDataset(images, masks, FolderOptions(num_classes=2))
    with pytest.raises(DataError, match=r"a\.png: the mask is 33x32 but its image a\.png is 32x32"):
        dataset[0]
    cases = {
        b"": "empty",
        b"not an image at all": "not a readable image",
        png_header_only(200_000, 200_000): "absurd|above the limit",
    }
    full = (images / "a.png").read_bytes()
    cases[full[: len(full) // 2]] = "truncated"
    for content, message in cases.items():
        (images / "a.png").write_bytes(content)
        with pytest.raises(FileProblem, match=message) as info:
            dataset[0]
        assert info.value.path == images / "a.png"


def test_isbi_membrane_folder_loads_with_value_map():
    if not (ISBI_DIR / "train" / "image").is_dir():
        pytest.skip(f"ISBI-2012 data not found at {ISBI_DIR}")
    dataset = FolderDataset(ISBI_DIR / "train" / "image", ISBI_DIR / "train" / "label",
                            FolderOptions(value_map={0: 0, 255: 1}, class_names=["membrane", "cell"]))
    assert len(dataset) == 30
    image, mask = dataset[3]
    assert image.shape == (3, 512, 512) and mask.shape == (512, 512)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # greyscale -> three equal channels
    assert set(mask.unique().tolist()) == {0, 1}
    frequencies = dataset.class_frequencies()
    # Membranes are thin lines: a clear minority of the pixels, but far from absent.
    assert 0.1 < frequencies["membrane"] < 0.4 and abs(sum(frequencies.values()) - 1) < 1e-9
    small = FolderDataset(ISBI_DIR / "train" / "image", ISBI_DIR / "train" / "label",
                          FolderOptions(value_map={0: 0, 255: 1}), size=128)
    assert small[0][1].shape == (128, 128)
