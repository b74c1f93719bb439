"""Predictions back out: a class mask traced into COCO / LabelMe objects and read back by seglab's own readers
(predict -> export -> read back): 100 % of pixels through RLE, >= 99 % through polygons at the default tolerance,
holes kept, specks dropped, class names and scores carried."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from seglab.data.annotations.dataset import AnnotationDataset
from seglab.data.annotations.export import (
    Prediction,
    coco_document,
    trace_regions,
    write_coco,
    write_labelme,
)
from seglab.data.annotations.sources import AnnotationSplit
from seglab.data.options import FolderOptions

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CLASSES = ("background", "building", "window", "tree")


def predicted_mask() -> np.ndarray:
    """A 64x80 prediction: a building with two windows (holes filled by another class) and a background hole, a
    disc-shaped tree overlapping its corner, a diagonal band, and a 2-pixel speck."""
    ys, xs = np.mgrid[0:64, 0:80]
    mask = np.zeros((64, 80), dtype=np.int64)
    mask[8:48, 10:50] = 1
    mask[14:22, 16:24] = 2
    mask[14:22, 32:40] = 2
    mask[30:38, 20:28] = 0  # a hole of background inside the building
    mask[(ys - 44) ** 2 + (xs - 52) ** 2 <= 100] = 3
    mask[(np.abs(ys - xs + 10) <= 2) & (xs > 58)] = 2
    mask[60:62, 2] = 3  # a speck of 2 pixels
    return mask


def read_back(annotation_file, fmt: str, tmp_path) -> np.ndarray:
    # LabelMe files carry names only (classes in name order when read alone): read them with the model's classes.
    options = FolderOptions(class_names=list(CLASSES)) if fmt == "labelme" else FolderOptions()
    dataset = AnnotationDataset(AnnotationSplit(fmt, (annotation_file,)), options, cache_folder=tmp_path / "cache")
    return dataset.load(0)[1], dataset


def write_image(path, shape):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*shape, 3), dtype=np.uint8)).save(path)


def test_coco_rle_round_trip_is_exact(tmp_path):
    mask = predicted_mask()
    write_image(tmp_path / "p.png", mask.shape)
    path = write_coco(tmp_path / "predictions.json", [Prediction("p.png", mask)], CLASSES, mode="rle", min_area=0)
    back, dataset = read_back(path, "coco", tmp_path)
    assert dataset.class_names == CLASSES
    assert np.array_equal(back, mask)


def test_coco_polygon_round_trip(tmp_path):
    mask = predicted_mask()
    write_image(tmp_path / "p.png", mask.shape)
    confidence = np.where(mask == 3, 0.75, 0.5)
    path = write_coco(tmp_path / "predictions.json", [Prediction("p.png", mask, confidence)], CLASSES)
    document = json.loads(path.read_text())
    assert {c["name"] for c in document["categories"]} == set(CLASSES)  # background listed: the hole needs it
    assert any(a["category_id"] == 0 for a in document["annotations"])  # the hole, as a background object
    tree = [a for a in document["annotations"] if a["category_id"] == 3]
    assert len(tree) == 1 and tree[0]["score"] == pytest.approx(0.75, abs=0.02)  # the speck is dropped
    back, _ = read_back(path, "coco", tmp_path)
    without_speck = mask.copy()
    without_speck[60:62, 2] = 0
    assert (back == without_speck).mean() >= 0.99
    assert (back[30:38, 20:28] == 0).all() and (back[14:22, 16:24] == 2).all()  # holes kept
    exact = write_coco(tmp_path / "exact.json", [Prediction("p.png", without_speck)], CLASSES, tolerance=0)
    assert np.array_equal(read_back(exact, "coco", tmp_path)[0], without_speck)  # pixel edges, unsimplified


def test_labelme_round_trip(tmp_path):
    mask = predicted_mask()
    write_image(tmp_path / "images" / "p.png", mask.shape)
    path = write_labelme(tmp_path / "json" / "p.json", Prediction("p.png", mask), CLASSES,
                         image=tmp_path / "images" / "p.png")
    document = json.loads(path.read_text())
    assert document["imagePath"] == "../images/p.png"
    assert {s["label"] for s in document["shapes"]} == {"_background_", "building", "window", "tree"}
    back, _ = read_back(path, "labelme", tmp_path)
    without_speck = mask.copy()
    without_speck[60:62, 2] = 0
    assert (back == without_speck).mean() >= 0.99


def test_tracing_the_real_export(tmp_path):
    from test_annotations_coco import FACADE

    if not FACADE.is_dir():
        pytest.skip(f"the shared facade export is not at {FACADE}")
    source = AnnotationDataset(AnnotationSplit("coco", (FACADE / "test" / "_annotations.coco.json",)),
                               cache_folder=tmp_path / "cache")
    _, mask = source.load(0)
    image = source.images[0].image_path
    polygons = coco_document([Prediction(image.name, mask)], source.class_names, min_area=0)
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / image.name).symlink_to(image)
    path = tmp_path / "export" / "p.json"
    path.write_text(json.dumps(polygons))
    back, _ = read_back(path, "coco", tmp_path)
    assert (back == mask).mean() >= 0.99
    assert all(len(region.polygon) >= 3 for region in trace_regions(mask))


def test_writer_as_predict_callback(tmp_path):
    from seglab.data.annotations.export import AnnotationWriter

    mask = predicted_mask()
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "in" / name, mask.shape)
    writer = AnnotationWriter("coco", tmp_path / "out", CLASSES, mode="rle", min_area=0)
    for name in ("a.png", "b.png"):
        writer(tmp_path / "in" / name, None, mask)
    (path,) = writer.close()
    document = json.loads(path.read_text())
    assert [image["file_name"] for image in document["images"]] == ["a.png", "b.png"]
    assert len({a["id"] for a in document["annotations"]}) == len(document["annotations"])
    (tmp_path / "in" / path.name).write_text(path.read_text())
    dataset = AnnotationDataset(AnnotationSplit("coco", (tmp_path / "in" / path.name,)),
                                cache_folder=tmp_path / "cache")
    assert np.array_equal(dataset.load(1)[1], mask)
    labelme = AnnotationWriter("labelme", tmp_path / "json", CLASSES)
    labelme(tmp_path / "in" / "a.png", None, mask)
    assert json.loads((tmp_path / "json" / "a.json").read_text())["imagePath"] == "../in/a.png"
