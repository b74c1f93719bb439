"""Image / prediction / truth grids: column titles, class legend, captions, columns of triplets, and the
validation-samples callback writing them during training."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.evaluation.plots import save_prediction_grid, save_triplet_grid, spread_indices, triplet_grid
from seglab.training.callbacks import ValidationSamples
from seglab.training.config import make_config
from seglab.training.run import train
from training_helpers import TinySegmenter

IMAGE_COLOUR = (10, 200, 30)  # in no palette below
TINY = {
    "dataset": "shapes", "image_size": 32, "train_length": 16, "val_length": 8, "batch_size": 4,
    "model": "deeplabv3plus_xception41", "precision": "32-true", "progress_bar": False, "max_epochs": 1,
    "test_after_training": False,
}


def _palette(count: int) -> list[tuple[int, int, int]]:
    # Distinct colours, none black, white, grey or the image colour.
    return [(20 + 5 * i, 250 - 5 * i, 100 + (i % 7) * 20) for i in range(count)]


def _rows(count: int, height: int = 24, width: int = 30, label: int = 0) -> list[tuple]:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = IMAGE_COLOUR
    labels = np.full((height, width), label, dtype=np.int64)
    return [(image, labels, labels) for _ in range(count)]


def _where(grid: np.ndarray, colour) -> tuple[np.ndarray, np.ndarray]:
    return np.nonzero((grid == np.asarray(colour, dtype=np.uint8)).all(axis=2))


def test_grid_has_titles_and_a_legend_of_every_class():
    palette = _palette(5)
    names = [f"class {i}" for i in range(5)]
    grid = triplet_grid(_rows(2), palette, names)
    image_rows, image_columns = _where(grid, IMAGE_COLOUR)
    # Dark title text above the image column and above the prediction / truth columns right of it.
    above = grid[:image_rows.min()]
    dark = (above < 100).all(axis=2)
    assert dark[:, image_columns.min():image_columns.max() + 1].any()
    assert dark[:, image_columns.max() + 1:].sum() > dark[:, image_columns.min():image_columns.max() + 1].sum()
    # The label maps only use class 0, so classes 1-4 can only be legend swatches, drawn below the rows.
    for colour in palette[1:]:
        rows, _ = _where(grid, colour)
        assert len(rows) > 20 and rows.min() > image_rows.max(), colour
    # The class-0 swatch is in the legend as well as in the maps.
    assert _where(grid, palette[0])[0].max() > image_rows.max()


def test_grid_grows_with_classes_and_rows():
    few = triplet_grid(_rows(2), _palette(3), ["a", "b", "c"])
    many_classes = triplet_grid(_rows(2), _palette(40), [f"a rather long class name {i}" for i in range(40)])
    more_rows = triplet_grid(_rows(4), _palette(3), ["a", "b", "c"])
    assert many_classes.shape[0] > few.shape[0] + 3 * 14  # the legend wraps onto several lines
    assert many_classes.shape[1] <= few.shape[1] + 400  # ... instead of growing sideways without bound
    assert more_rows.shape[0] > few.shape[0] and more_rows.shape[1] == few.shape[1]
    for colour in _palette(40):
        assert len(_where(many_classes, colour)[0]) > 20, colour


def test_long_grids_are_laid_out_in_columns_of_triplets():
    rows = []
    for index in range(12):
        image = np.full((40, 40, 3), (index * 20, 7, 99), dtype=np.uint8)
        rows.append((image, np.zeros((40, 40), np.int64), np.ones((40, 40), np.int64)))
    grid = triplet_grid(rows, _palette(2), ["background", "thing"])
    assert grid.shape[1] > grid.shape[0]  # landscape
    first_y, first_x = _where(grid, (0, 7, 99))
    last_y, last_x = _where(grid, (11 * 20, 7, 99))
    fifth_y, fifth_x = _where(grid, (4 * 20, 7, 99))
    assert last_x.min() > fifth_x.max() > first_x.max()  # three columns of four triplets, read down then across
    assert fifth_y.min() == first_y.min()
    assert len(first_y) == len(last_y) == 40 * 40
    # rows_per_column=12 keeps one column only if the picture is still landscape: it is not, so it splits too.
    assert triplet_grid(rows, _palette(2), ["background", "thing"], rows_per_column=12).shape[1] > 3 * 40 * 2


def test_captions_and_ignored_labels(tmp_path):
    rows = _rows(3)
    long = "some/deeply/nested/folder/" * 12 + "image_with_a_very_long_name.png  IoU 0.87"
    captioned = [(*row, caption) for row, caption in zip(rows, (long, None, "short"), strict=True)]
    plain = triplet_grid(rows, _palette(2), ["background", "thing"])
    with_captions = triplet_grid(captioned, _palette(2), ["background", "thing"])
    assert with_captions.shape[1] == plain.shape[1]  # a long caption is shortened, not widening the grid
    assert with_captions.shape[0] > plain.shape[0]
    save_triplet_grid(captioned, _palette(2), ["background", "thing"], tmp_path / "grid.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid.png")), with_captions)

    # A label outside the palette (ignore 255) is white in the truth and adds an "ignored" legend entry.
    image, prediction, truth = _rows(1, label=1)[0]
    truth = truth.copy()
    truth[:, :10] = 255
    without = triplet_grid([(image, prediction, prediction)], _palette(2), ["background", "thing"])
    ignored = triplet_grid([(image, prediction, truth)], _palette(2), ["background", "thing"])
    legend = slice(_where(without, IMAGE_COLOUR)[0].max() + 1, None)
    grey = (128, 128, 128)  # swatch outlines
    assert len(_where(ignored[legend], grey)[0]) >= len(_where(without[legend], grey)[0]) + 30
    assert len(_where(ignored, _palette(2)[1])[0]) == len(_where(without, _palette(2)[1])[0]) - 24 * 10


def test_grid_rejects_mismatched_input(tmp_path):
    image, prediction, truth = _rows(1)[0]
    with pytest.raises(ValueError, match="class names"):
        triplet_grid([(image, prediction, truth)], _palette(3), ["a", "b"])
    with pytest.raises(ValueError, match="do not match"):
        triplet_grid([(image, prediction[:, :5], truth)], _palette(2), ["a", "b"])
    images = torch.rand(12, 3, 16, 20)
    masks = torch.randint(0, 2, (12, 16, 20))
    save_prediction_grid(images, masks, masks, tmp_path / "batch.png", _palette(2), ["a", "b"])
    assert Image.open(tmp_path / "batch.png").size[0] > Image.open(tmp_path / "batch.png").size[1]


def test_callback_skips_the_sanity_check(tmp_path):
    callback = ValidationSamples(tmp_path)
    trainer = SimpleNamespace(sanity_checking=True, state=SimpleNamespace(fn="fit"), is_global_zero=True)
    callback.on_validation_end(trainer, None)
    assert not list(tmp_path.iterdir())


def test_training_writes_validation_samples(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # The grid shows whatever the network predicts: a conv-BN-conv network stands in for the config's Xception-41.
    train(make_config({**TINY, "runs_dir": str(tmp_path), "name": "tiny"}), model=TinySegmenter())
    run = tmp_path / "tiny"
    picture = Image.open(run / "val_samples.png")
    assert picture.size[0] > picture.size[1] > 2 * 32  # 8 triplets in two columns
    assert sorted(path.name for path in run.iterdir() if "val_samples" in path.name) == ["val_samples.png"]
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert "val/samples" in events.Tags()["images"]
    image = events.Images("val/samples")[-1]
    assert (image.width, image.height) == picture.size


def test_no_validation_data_means_no_samples(tmp_path: Path):
    callback = ValidationSamples(tmp_path)
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), is_global_zero=True,
                              datamodule=SimpleNamespace(datasets={}))
    callback.on_validation_end(trainer, None)
    assert not list(tmp_path.iterdir())


def test_validation_samples_are_spread_over_the_split(tmp_path: Path):
    # Consecutive frames look alike: the callback shows items spread evenly, first and last included, and
    # reads the same ones at every validation.
    assert spread_indices(20, 8) == [0, 3, 5, 8, 11, 14, 16, 19]
    assert spread_indices(5, 8) == [0, 1, 2, 3, 4] and spread_indices(9, 1) == [0] and spread_indices(0, 8) == []
    read: list[int] = []

    class Recording(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 20

        def __getitem__(self, index: int):
            read.append(index)
            return torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.long)

    callback = ValidationSamples(tmp_path)
    callback.predict = lambda module, images: [np.zeros((4, 4), np.int64) for _ in images]
    callback.draw = lambda module, predictions: np.zeros((4, 4, 3), np.uint8)
    trainer = SimpleNamespace(sanity_checking=False, state=SimpleNamespace(fn="fit"), is_global_zero=True,
                              datamodule=SimpleNamespace(datasets={"val": Recording()}), loggers=[],
                              precision_plugin=SimpleNamespace(val_step_context=contextlib.nullcontext))
    callback.on_validation_end(trainer, None)
    callback.on_validation_end(trainer, None)
    assert read == [0, 3, 5, 8, 11, 14, 16, 19] and callback.indices == read
    assert (tmp_path / "val_samples.png").is_file()
