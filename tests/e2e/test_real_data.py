"""Datasets as they come: split-folder layouts, non-square sizes, crops, palettes and fine-tuning, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seglab
from seglab.cli import main
from seglab.data import ShapesDataset
from seglab.data.datasets import build_datasets, warn_if_stretched
from seglab.training.config import load_config, make_config

# Non-square multi-class data: shapes v1 drawn at 40x56 (background, circle, triangle, square).
HEIGHT, WIDTH = 40, 56
SPLIT_FOLDERS = {
    "segnet": lambda split: (split, f"{split}annot"),
    "mmseg": lambda split: (f"img_dir/{split}", f"ann_dir/{split}"),
}


def write_tree(root: Path, layout: str, counts: dict[str, int], *, palette: dict | None = None) -> Path:
    for split, count in counts.items():
        images, masks = (root / folder for folder in SPLIT_FOLDERS[layout](split))
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        data = ShapesDataset(split, size=(HEIGHT, WIDTH), length=count)
        for index in range(count):
            image, mask = data[index]
            Image.fromarray((image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(
                images / f"{split}_{index:03d}.png")
            labels = mask.numpy().astype(np.uint8)
            if palette is not None:
                colours = np.array([palette[c] for c in range(4)], dtype=np.uint8)
                Image.fromarray(colours[labels]).save(masks / f"{split}_{index:03d}.png")
            else:
                Image.fromarray(labels).save(masks / f"{split}_{index:03d}.png")
    return root


def few_lines(root: Path, runs: Path, **extra) -> str:
    """The few lines a user writes for their own data."""
    lines = {"name": "mine", "runs_dir": str(runs), "dataset": "folder", "data_root": str(root),
             "class_names": ["background", "circle", "triangle", "square"], "image_size": [HEIGHT, WIDTH],
             "crop_size": [32, 32], "batch_size": 4, "max_epochs": 1, "precision": "32-true", "progress_bar": False,
             "model": "deeplabv3plus_xception41", **extra}
    return "\n".join(f"{key}: {json.dumps(value)}" for key, value in lines.items()) + "\n"


@pytest.mark.parametrize("layout", ["segnet", "mmseg"])
def test_a_split_folder_tree_trains_and_is_evaluated_on_its_test_split(tmp_path, layout, capsys):
    root = write_tree(tmp_path / "data", layout, {"train": 8, "val": 4, "test": 4})
    config = tmp_path / "mine.yaml"
    config.write_text(few_lines(root, tmp_path / "runs"))
    assert main(["train", str(config)]) == 0
    run = tmp_path / "runs" / "mine"
    tested = json.loads((run / "test_metrics.json").read_text())
    assert tested["images"] == 4 and set(tested["per_class"]) == {"background", "circle", "triangle", "square"}
    spec = seglab.load(run).spec
    assert spec.working_size == (HEIGHT, WIDTH)  # validated on whole, non-square images
    # The run's own splits are what `seglab evaluate` reads back.
    assert main(["evaluate", str(run), "--split", "val", "--no-progress"]) == 0
    assert json.loads((run / "evaluate" / "val" / "metrics.json").read_text())["images"] == 4
    saved = load_config(run / "config.yaml")
    datasets = build_datasets(saved.data, seed=saved.seed)
    assert {split: len(ds) for split, ds in datasets.items()} == {"train": 8, "val": 4, "test": 4}
    image, mask = datasets["train"][0]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)  # random crops
    image, mask = datasets["val"][0]
    assert image.shape == (3, HEIGHT, WIDTH)


def test_split_folders_by_name_crops_own_sizes_and_palettes(tmp_path):
    palette = {0: [0, 0, 0], 1: [255, 0, 0], 2: [0, 255, 0], 3: [0, 0, 255]}
    root = write_tree(tmp_path / "data", "segnet", {"train": 6, "val": 2, "test": 2}, palette=palette)
    big = np.asarray(Image.open(root / "train" / "train_000.png").resize((80, 60)))
    Image.fromarray(big).save(root / "train" / "train_000.png")  # another size, and the mask too
    Image.open(root / "trainannot" / "train_000.png").resize((80, 60), Image.Resampling.NEAREST).save(
        root / "trainannot" / "train_000.png")
    config = make_config(
        dataset="folder", images_dir=str(root / "train"), masks_dir=str(root / "trainannot"),
        val_images_dir=str(root / "val"), val_masks_dir=str(root / "valannot"), test_images_dir=str(root / "test"),
        test_masks_dir=str(root / "testannot"), palette={k: f"#{r:02x}{g:02x}{b:02x}" for k, (r, g, b) in
                                                          palette.items()},
        image_size=None, crop_size=[24, 48], batch_size=2, max_epochs=1, runs_dir=str(tmp_path / "runs"),
        name="own", precision="32-true", progress_bar=False, augment=True, vflip=True, scale=None)
    datasets = build_datasets(config.data, seed=config.seed)
    assert datasets["val"][0][0].shape == (3, HEIGHT, WIDTH)
    assert {tuple(datasets["train"][i][1].shape) for i in range(6)} == {(24, 48)}
    from seglab.training.run import train

    result = train(config)
    spec = seglab.load(result.run_dir).spec
    assert spec.working_size is None and spec.working_short_side is None  # each image at its own size
    assert spec.palette == tuple(tuple(colour) for colour in palette.values())  # the masks' colours
    assert result.test is not None and result.test.metrics["images"] == 2


def test_stretching_other_aspect_ratios_warns_once_with_the_count(tmp_path):
    root = write_tree(tmp_path / "data", "segnet", {"train": 3})
    config = make_config(dataset="folder", images_dir=str(root / "train"), masks_dir=str(root / "trainannot"),
                         image_size=32, num_classes=4)
    with pytest.warns(UserWarning, match="3 of 3 training images .* stretched") as caught:
        build_datasets(config.data, seed=config.seed)
    assert len([w for w in caught if "stretched" in str(w.message)]) == 1
    datasets = build_datasets(make_config(config.to_dict(), image_size=[HEIGHT, WIDTH]).data)
    assert warn_if_stretched(datasets["train"].dataset, (HEIGHT, WIDTH), keep_aspect=False) == 0


def test_fine_tuning_changes_the_class_count_and_keeps_the_backbone(tmp_path, trained_run):
    root = write_tree(tmp_path / "data", "segnet", {"train": 4, "val": 2})
    for folder in ("trainannot", "valannot"):  # two classes: background and shape
        for path in (root / folder).glob("*.png"):
            Image.fromarray((np.asarray(Image.open(path)) > 0).astype(np.uint8)).save(path)
    config = make_config(dataset="folder", data_root=str(root), class_names=["background", "shape"],
                         image_size=[HEIGHT, WIDTH], batch_size=2, max_epochs=1, init_from=str(trained_run),
                         freeze_backbone=True, runs_dir=str(tmp_path / "runs"), name="tuned", precision="32-true",
                         progress_bar=False)
    from seglab.training.run import train

    result = train(config)
    report = json.loads((result.run_dir / "init_from.json").read_text())
    assert report["reinitialised"] == ["head.classifier.weight", "head.classifier.bias"]
    source = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    tuned = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    backbone = [key for key in source if key.startswith("model.backbone.") and "running" not in key]
    assert backbone and all(torch.equal(source[key], tuned[key]) for key in backbone)
    assert seglab.load(result.run_dir).class_names == ("background", "shape")
    # Starting over in the source's own folder would delete the weights before reading them.
    from seglab.errors import ConfigError

    with pytest.raises(ConfigError, match="lies inside the run folder"):
        train(make_config(config.to_dict(), name="tuned", init_from=str(result.run_dir)), overwrite=True)
