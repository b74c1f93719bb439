"""`seglab predict` and `seglab evaluate` end to end on the session's small trained model."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

import seglab
from data_fixtures import write_pickled_payload_checkpoint
from seglab.cli import main
from seglab.data import ShapesDataset


def shapes_rgb(index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    image, mask = ShapesDataset("test", size=size)[index]
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), mask.numpy().astype(np.uint8)


@pytest.fixture()
def inputs(tmp_path):
    """A folder of good images in several modes and sizes, bad files among them, and their masks."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    (images / "sub").mkdir(parents=True)
    masks.mkdir()
    for index in range(4):
        rgb, mask = shapes_rgb(index)
        Image.fromarray(rgb).save(images / f"img{index}.png")
        Image.fromarray(mask).save(masks / f"img{index}.png")
    rgb, _ = shapes_rgb(4)
    Image.fromarray(rgb).save(images / "photo.jpg", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(images / "cmyk.jpg")
    Image.fromarray(rgb).convert("RGBA").save(images / "alpha.png")
    Image.fromarray(rgb[:, :, 0]).save(images / "grey.png")
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(images / "deep16.png")
    Image.fromarray(shapes_rgb(5, size=96)[0][:80]).save(images / "sub" / "wide.png")  # 80 x 96
    (images / "zero.png").write_bytes(b"")
    (images / "text.png").write_text("not an image")
    data = (images / "img0.png").read_bytes()
    (images / "cut.png").write_bytes(data[: len(data) // 2])
    return images, masks


def test_predict_writes_masks_overlays_probabilities_and_reports_bad_files(trained_run, inputs, tmp_path, capsys):
    images, _ = inputs
    out = tmp_path / "out"
    code = main(["predict", str(trained_run), str(images), "--out", str(out), "--overlay", "--save-probs",
                 "--recursive", "--no-progress", "--precision", "fp32"])
    report = capsys.readouterr().out
    assert code == 1  # some inputs failed, the rest was predicted
    assert "predicted 10 image(s)" in report
    for name, tag in (("zero.png", "empty"), ("text.png", "unreadable"), ("cut.png", "truncated")):
        assert f"[{tag}] {images / name}" in report, report
    predictor = seglab.load(trained_run)
    for name in ("img0.png", "img1.png", "photo.jpg", "cmyk.jpg", "alpha.png", "grey.png", "deep16.png"):
        stem = name.rsplit(".", 1)[0]
        mask = Image.open(out / f"{stem}.png")
        assert mask.mode == "P"
        assert np.array_equal(np.array(mask), predictor.predict(images / name))
        assert Image.open(out / f"{stem}_overlay.png").size == (64, 64)
        probabilities = np.load(out / f"{stem}_probs.npy")
        assert probabilities.dtype == np.float16 and probabilities.shape == (4, 64, 64)
        assert np.allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=4e-3)
    # --recursive mirrors sub-folders, at the image's own size.
    assert np.array(Image.open(out / "sub" / "wide.png")).shape == (80, 96)
    assert not any(p.name.endswith(".png") and p.stem.startswith(("img", "photo")) for p in images.glob("*_*"))
    # The same command again refuses to overwrite the masks it wrote.
    assert main(["predict", str(trained_run), str(images / "img0.png"), "--out", str(out), "--no-progress"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["predict", str(trained_run), str(images / "img0.png"), "--out", str(out), "--overwrite",
                 "--no-progress"]) == 0


def test_predict_refuses_an_output_inside_an_input_folder_and_clashing_stems(trained_run, inputs, tmp_path, capsys):
    images, _ = inputs
    assert main(["predict", str(trained_run), str(images), "--out", str(images / "predictions")]) == 2
    assert "never writes into an input folder" in capsys.readouterr().err
    assert not (images / "predictions").exists()
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(shapes_rgb(0)[0]).save(other / "img0.jpg")
    assert main(["predict", str(trained_run), str(images / "img0.png"), str(other / "img0.jpg"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "written twice" in err and "img0.png" in err and "img0.jpg" in err
    assert main(["predict", str(trained_run), str(tmp_path / "nothing*.png"), "--out", str(tmp_path / "o2"),
                 "--no-progress"]) == 1
    assert "[no-match]" in capsys.readouterr().out


def test_predict_with_ground_truth_writes_grids_and_per_image_scores(trained_run, inputs, tmp_path, capsys):
    images, masks = inputs
    out = tmp_path / "scored"
    files = [str(images / f"img{i}.png") for i in range(4)]
    assert main(["predict", str(trained_run), *files, "--out", str(out), "--masks", str(masks), "--tile", "48",
                 "--tta", "flip", "--no-progress"]) == 0
    with open(out / "per_image.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["file"] for row in rows] == files
    for row in rows:
        prediction = np.array(Image.open(out / (row["file"].rsplit("/", 1)[-1])))
        truth = np.array(Image.open(masks / row["file"].rsplit("/", 1)[-1]))
        assert float(row["pixel_accuracy"]) == pytest.approx((prediction == truth).mean(), abs=1e-6)
    grid = Image.open(out / "grids" / "grid_000.png")  # 4 triplets of 160 px thumbnails, titled, with a legend
    assert grid.size[0] > 2 * 3 * 160 and grid.size[1] > 2 * 160


def test_evaluate_reproduces_the_training_validation(trained_run, tmp_path, capsys):
    with open(trained_run / "metrics.csv", newline="") as file:
        history = list(csv.DictReader(file))
    best = max(history, key=lambda row: float(row["val_miou"]))
    out = tmp_path / "eval"
    # The same data, batch size and precision as the validation inside training.
    precision = {"bf16-mixed": "bf16", "32-true": "fp32"}[_training_precision()]
    assert main(["evaluate", str(trained_run), "--split", "val", "--out", str(out), "--batch-size", "16",
                 "--precision", precision, "--no-progress"]) == 0
    table = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 16 and metrics["precision"] == precision
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy"):
        assert metrics[key] == pytest.approx(float(best[f"val_{key}"]), abs=1e-6), key
    for name, scores in metrics["per_class"].items():
        assert (scores["iou"] or math.nan) == pytest.approx(float(best[f"val_iou_{name}"]), abs=1e-6, nan_ok=True)
    for key in ("frequency_weighted_iou", "mean_dice", "mean_precision", "mean_recall"):
        assert 0 <= metrics[key] <= 1
    assert f"{100 * metrics['miou']:6.2f}" in table
    with open(out / "per_image.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 16
    confusion = np.loadtxt(out / "confusion_matrix.csv", delimiter=",", skiprows=1, usecols=range(1, 5))
    assert confusion.sum() == 16 * 64 * 64
    assert Image.open(out / "confusion_matrix.png").size[0] > 200


def _training_precision() -> str:
    from seglab.training.config import make_config
    from seglab.training.hardware import lightning_precision

    return lightning_precision(make_config({"precision": "auto"}))


def test_evaluate_on_folders_and_default_output_folder(trained_run, inputs, tmp_path, capsys):
    images, masks = inputs
    folder = tmp_path / "pairs"
    (folder / "images").mkdir(parents=True)
    for index in range(4):
        (folder / "images" / f"img{index}.png").write_bytes((images / f"img{index}.png").read_bytes())
    assert main(["evaluate", str(trained_run / "checkpoints" / "best.ckpt"), "--images", str(folder / "images"),
                 "--masks", str(masks), "--no-progress"]) == 0
    metrics = json.loads((trained_run / "evaluate" / "folder-images" / "metrics.json").read_text())
    assert metrics["images"] == 4 and metrics["data"] == f"folder {folder / 'images'}" and metrics["split"] is None
    assert main(["evaluate", str(trained_run), "--images", str(folder / "images"), "--no-progress"]) == 2
    assert "both --images and --masks" in capsys.readouterr().err


def test_cli_refuses_a_checkpoint_that_carries_code(tmp_path, capsys):
    marker = tmp_path / "marker.txt"
    write_pickled_payload_checkpoint(tmp_path / "evil.ckpt", marker)
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "evil.ckpt"), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert "refused, it holds pickled Python objects (getattr)" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "evil.ckpt"), "--out", str(tmp_path / "e")]) == 2
    assert "refused, it holds pickled Python objects (getattr)" in capsys.readouterr().err
    assert not marker.exists()
