"""ShapesDataset / generate_shapes ("shapes v1") and `seglab data shapes`."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import TESTS_DIR
from seglab.cli import main
from seglab.data import SHAPES_V1, FolderDataset, FolderOptions, ShapesDataset, generate_shapes
from seglab.errors import ConfigError

# sha256 of the masks of samples 0..3 of each split at size 64, seed 0, and a digest of their images (below).
# This pins "shapes v1": if it changes, the generator changed and must get a new version instead (benchmark
# numbers would no longer compare).
SHAPES_V1_MASKS_SHA256 = "c4ddefd8ee485118e13615a3cac1079ba998267c35f4b25430ad535198eed38a"
SHAPES_V1_IMAGES = TESTS_DIR / "fixtures" / "shapes_v1_images.json"
# Images are floats computed with numpy: pinned to a tolerance, not bytes. A 2 % change to the noise, shading,
# texture or background gradient amplitude moves some digest value by 4e-4 or more.
IMAGE_TOLERANCE = 2e-4


def image_digest(image: np.ndarray, cells: int = 4) -> list[float]:
    """The mean of each channel over a cells x cells grid (colours, gradients, shading, coarse texture) and the
    mean absolute difference of horizontal neighbours (noise and fine texture)."""
    channels, height, width = image.shape
    grid = image.astype(np.float64).reshape(channels, cells, height // cells, cells, width // cells).mean(axis=(2, 4))
    return [*grid.ravel().tolist(), float(np.abs(np.diff(image.astype(np.float64), axis=2)).mean())]


def test_shapes_v1_is_frozen():
    digest = hashlib.sha256()
    images = {}
    for split in ("train", "val", "test"):
        for index in range(4):
            image, mask = generate_shapes(split, index, size=64, seed=0)
            digest.update(mask.tobytes())
            images[f"{split}/{index}"] = image_digest(image)
    assert SHAPES_V1.version == "v1"
    assert digest.hexdigest() == SHAPES_V1_MASKS_SHA256
    pinned = json.loads(SHAPES_V1_IMAGES.read_text())
    assert pinned.keys() == images.keys()
    for key, values in images.items():
        assert np.allclose(values, pinned[key], rtol=0, atol=IMAGE_TOLERANCE), key


def test_items_types_and_defaults():
    train = ShapesDataset("train")
    assert (len(train), len(ShapesDataset("val")), len(ShapesDataset("test"))) == (800, 100, 100)
    assert train.class_names == ("background", "circle", "triangle", "square")
    assert train.num_classes == 4 and train.ignore_index == 255
    image, mask = train[0]
    assert image.dtype == torch.float32 and image.shape == (3, 128, 128)
    assert mask.dtype == torch.int64 and mask.shape == (128, 128)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3} and (mask > 0).any()
    assert torch.equal(train[-1][1], train[799][1])
    with pytest.raises(IndexError):
        train[800]
    with pytest.raises(ConfigError, match="unknown shapes split"):
        ShapesDataset("validation")


def test_deterministic_and_split_dependent():
    a, b = ShapesDataset("train", size=48, seed=3), ShapesDataset("train", size=48, seed=3)
    assert all(torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1]) for i in range(3))
    assert not torch.equal(a[0][1], ShapesDataset("train", size=48, seed=4)[0][1])
    # Fresh training samples beyond the default 800 never repeat validation or test samples.
    fresh = ShapesDataset("train", size=32, length=100_000)
    others = {ShapesDataset(split, size=32)[i][1].numpy().tobytes() for split in ("val", "test") for i in range(40)}
    assert len(others) == 80
    assert all(fresh[i][1].numpy().tobytes() not in others for i in (0, 1, 5000, 99_999))


def test_statistics_make_a_nontrivial_task():
    masks = np.stack([generate_shapes("train", i, size=64)[1] for i in range(120)])
    present = np.array([np.isin([1, 2, 3], m).sum() for m in masks])
    fractions = np.bincount(masks.ravel(), minlength=4) / masks.size
    assert 0.6 < fractions[0] < 0.95  # mostly background, but shapes are not specks
    assert all(f > 0.02 for f in fractions[1:])  # every shape class is common
    assert present.min() >= 1 and (present >= 2).mean() > 0.3  # 1-4 shapes, often of several classes


def test_rotation_and_equal_areas_with_single_shape_spec():
    one = replace(SHAPES_V1, min_shapes=1, max_shapes=1, size_range=(0.15, 0.15), centre_range=(0.5, 0.5))
    fill, area = {2: [], 3: []}, {1: [], 2: [], 3: []}
    for i in range(60):
        mask = generate_shapes("train", i, size=96, spec=one)[1]
        cls = int(mask.max())
        ys, xs = np.nonzero(mask)
        area[cls].append(len(ys))
        if cls in fill:
            fill[cls].append(len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    # Axis-aligned squares fill their bounding box; rotated ones (45 deg -> 0.5) do not.
    assert min(fill[3]) < 0.75 and max(fill[3]) > 0.85
    assert max(fill[2]) < 0.75  # triangles never fill their box
    means = [np.mean(area[c]) for c in (1, 2, 3)]
    assert max(means) / min(means) < 1.1  # equal areas: size does not give the class away


def test_low_contrast_colours():
    def contrast(probability: float) -> float:
        spec = replace(SHAPES_V1, low_contrast_probability=probability, noise_sigma=(0.0, 0.0), max_shapes=1)
        gaps = []
        for i in range(40):
            image, mask = generate_shapes("train", i, size=64, spec=spec)
            gaps.append(np.abs(image[:, mask > 0].mean(1) - image[:, mask == 0].mean(1)).mean())
        return float(np.mean(gaps))

    assert contrast(1.0) < 0.6 * contrast(0.0)


def test_generation_is_fast():
    generate_shapes("train", 0)  # warm the coordinate-grid cache
    start = time.perf_counter()
    for i in range(50):
        generate_shapes("train", i)
    per_sample = (time.perf_counter() - start) / 50
    # Target is < 5 ms at 128 px; the bound is loose because the CI cores are shared.
    assert per_sample < 0.02, f"{per_sample * 1000:.1f} ms per 128px sample"


def test_cli_exports_seed_layout_with_palette_masks(tmp_path, capsys):
    out = tmp_path / "shapes"
    code = main(["data", "shapes", "--out", str(out), "--size", "32", "--train", "3", "--val", "2", "--test", "1"])
    assert code == 0 and "wrote 6" in capsys.readouterr().out
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        assert len(list((out / f"{split}_imgs").glob("*.png"))) == count
        assert len(list((out / f"{split}_mask").glob("*.png"))) == count
    saved = Image.open(out / "val_mask" / "00001.png")
    assert saved.mode == "P" and saved.getpalette()[3:6] != [0, 0, 0]  # coloured for viewers
    image, mask = generate_shapes("val", 1, size=32)
    assert np.array_equal(np.asarray(saved), mask)
    rgb = np.asarray(Image.open(out / "val_imgs" / "00001.png"))
    assert np.abs(rgb.astype(float) / 255 - image.transpose(1, 2, 0)).max() <= 0.5 / 255 + 1e-6
    # The exported folders load back as a folder dataset with the same masks.
    folder = FolderDataset(out / "val_imgs", out / "val_mask", FolderOptions(class_names=ShapesDataset.class_names))
    assert torch.equal(folder[1][1], torch.from_numpy(mask.astype(np.int64)))
