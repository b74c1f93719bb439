"""Predictions back out: a class mask traced into COCO / LabelMe / CVAT / Label Studio objects and read back by
seglab's own readers (predict -> export -> read back): 100 % of pixels through RLE, >= 99 % through polygons at the
default tolerance, holes kept, specks dropped, class names and scores carried (each object's score the mean
probability of its class over its pixels, checked against the probability map)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image

from seglab.data.annotations.dataset import AnnotationDataset
from seglab.data.annotations.export import (
    Prediction,
    coco_document,
    write_coco,
    write_cvat,
    write_labelme,
    write_labelstudio,
)
from seglab.data.annotations.raster import cvat_mask, encode_cvat_rle
from seglab.data.annotations.sources import AnnotationSplit
from seglab.data.annotations.tracing import trace_regions
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


def probability_map(mask: np.ndarray) -> np.ndarray:
    """A made-up probability of each pixel's predicted class, in [0.4, 1)."""
    return np.random.default_rng(1).uniform(0.4, 1.0, mask.shape)


def expected_score(mask: np.ndarray, confidence: np.ndarray, class_index: int, xs, ys) -> float:
    """The score of an object of `class_index` whose outline spans `xs`, `ys` (pixel edges), computed apart from
    the tracer: the mean probability over its pixels, those of its class in that box (no two regions of one class
    share a box in `predicted_mask`). A hole (class 0) carries the score of the building it is cut from."""
    if class_index == 0:
        class_index, xs, ys = 1, (10, 50), (8, 48)
    box = np.s_[math.floor(ys[0]):math.ceil(ys[1]), math.floor(xs[0]):math.ceil(xs[1])]
    return pytest.approx(float(confidence[box][mask[box] == class_index].mean()), abs=1e-4)


def without_speck(mask: np.ndarray) -> np.ndarray:
    cleaned = mask.copy()
    cleaned[60:62, 2] = 0
    return cleaned


def accepted(path):
    """A Label Studio tasks file of predictions as the tool exports it once a person accepts them: each task's
    prediction becomes its annotation (seglab's reader reads annotations, never a model's predictions)."""
    tasks = json.loads(path.read_text())
    for task in tasks:
        task["annotations"] = [{"id": 1, "result": task["predictions"][0]["result"]}]
    path.write_text(json.dumps(tasks))
    return path


def read_back(annotation_file, fmt: str, tmp_path) -> np.ndarray:
    # LabelMe and Label Studio files carry names only (classes in name order when read alone): read them with the
    # model's classes.
    options = FolderOptions(class_names=list(CLASSES)) if fmt in ("labelme", "labelstudio") else FolderOptions()
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
    confidence = probability_map(mask)
    path = write_coco(tmp_path / "predictions.json", [Prediction("p.png", mask, confidence)], CLASSES)
    document = json.loads(path.read_text())
    assert {c["name"] for c in document["categories"]} == set(CLASSES)  # background listed: the hole needs it
    assert any(a["category_id"] == 0 for a in document["annotations"])  # the hole, as a background object
    assert len([a for a in document["annotations"] if a["category_id"] == 3]) == 1  # the speck is dropped
    for annotation in document["annotations"]:
        x, y, w, h = annotation["bbox"]
        assert annotation["score"] == expected_score(mask, confidence, annotation["category_id"], (x, x + w),
                                                     (y, y + h))
    back, _ = read_back(path, "coco", tmp_path)
    assert (back == without_speck(mask)).mean() >= 0.99
    assert (back[30:38, 20:28] == 0).all() and (back[14:22, 16:24] == 2).all()  # holes kept
    exact = write_coco(tmp_path / "exact.json", [Prediction("p.png", without_speck(mask))], CLASSES, tolerance=0)
    assert np.array_equal(read_back(exact, "coco", tmp_path)[0], without_speck(mask))  # pixel edges, unsimplified


def test_labelme_round_trip(tmp_path):
    mask = predicted_mask()
    write_image(tmp_path / "images" / "p.png", mask.shape)
    path = write_labelme(tmp_path / "json" / "p.json", Prediction("p.png", mask), CLASSES,
                         image=tmp_path / "images" / "p.png")
    document = json.loads(path.read_text())
    assert document["imagePath"] == "../images/p.png"
    assert {s["label"] for s in document["shapes"]} == {"_background_", "building", "window", "tree"}
    back, _ = read_back(path, "labelme", tmp_path)
    assert (back == without_speck(mask)).mean() >= 0.99
    scored = write_labelme(tmp_path / "json" / "scored.json", Prediction("p.png", mask, probability_map(mask)),
                           CLASSES, image=tmp_path / "images" / "p.png")
    coco = coco_document([Prediction("p.png", mask, probability_map(mask))], CLASSES)
    shapes = json.loads(scored.read_text())["shapes"]
    # A number labelme keeps (an unknown shape key) and a text its shape dialog shows; the objects are COCO's.
    assert all(shape["description"] == f"score {shape['score']}" for shape in shapes)
    assert sorted(s["score"] for s in shapes) == pytest.approx(sorted(a["score"] for a in coco["annotations"]),
                                                               abs=1e-4)


def test_cvat_round_trip(tmp_path):
    mask = predicted_mask()
    write_image(tmp_path / "p.png", mask.shape)
    confidence = probability_map(mask)
    path = write_cvat(tmp_path / "annotations.xml", [Prediction("p.png", mask, confidence)], CLASSES)
    shapes = ElementTree.parse(path).getroot().find("image")
    # The building has holes, which a CVAT polygon cannot have: it is a mask of its pixels; the rest are polygons.
    assert [(shape.tag, shape.get("label")) for shape in shapes if shape.tag != "polygon"] == [("mask", "building")]
    for shape in shapes:
        if shape.tag == "mask":
            left, top, width, height = (int(shape.get(key)) for key in ("left", "top", "width", "height"))
            xs, ys = (left, left + width), (top, top + height)
        else:
            points = np.array([p.split(",") for p in shape.get("points").split(";")], dtype=float)
            xs, ys = (points[:, 0].min(), points[:, 0].max()), (points[:, 1].min(), points[:, 1].max())
        score = float(shape.find("attribute[@name='score']").text)
        assert score == expected_score(mask, confidence, CLASSES.index(shape.get("label")), xs, ys)
    back, dataset = read_back(path, "cvat", tmp_path)
    assert dataset.class_names == CLASSES
    assert (back == without_speck(mask)).mean() >= 0.99
    assert (back[30:38, 20:28] == 0).all() and (back[14:22, 16:24] == 2).all()  # holes kept
    exact = write_cvat(tmp_path / "exact.xml", [Prediction("p.png", mask)], CLASSES, mode="rle", min_area=0)
    assert np.array_equal(read_back(exact, "cvat", tmp_path)[0], mask)


def test_labelstudio_round_trip(tmp_path):
    mask = predicted_mask()
    write_image(tmp_path / "p.png", mask.shape)
    confidence = probability_map(mask)
    path = write_labelstudio(tmp_path / "tasks.json", [Prediction("p.png", mask, confidence)], CLASSES,
                             model_version="tiny", image_prefix="/data/local-files/?d=photos/")
    (task,) = json.loads(path.read_text())
    assert task["data"] == {"image": "/data/local-files/?d=photos/p.png"}
    (prediction,) = task["predictions"]
    assert prediction["model_version"] == "tiny"
    assert prediction["score"] == pytest.approx(confidence.mean(), abs=1e-4)
    for result in prediction["result"]:
        assert result["type"] == "polygonlabels" and result["from_name"] == "label"
        points = np.array(result["value"]["points"]) * (80, 64) / 100
        class_index = CLASSES.index(result["value"]["polygonlabels"][0])
        xs, ys = (points[:, 0].min(), points[:, 0].max()), (points[:, 1].min(), points[:, 1].max())
        assert result["score"] == expected_score(mask, confidence, class_index, xs, ys)
    back, _ = read_back(accepted(path), "labelstudio", tmp_path)
    assert (back == without_speck(mask)).mean() >= 0.99
    assert (back[30:38, 20:28] == 0).all() and (back[14:22, 16:24] == 2).all()  # holes kept
    brush = write_labelstudio(tmp_path / "brush.json", [Prediction("p.png", mask, confidence)], CLASSES, mode="rle")
    results = json.loads(brush.read_text())[0]["predictions"][0]["result"]
    assert [(r["type"], r["value"]["brushlabels"]) for r in results] == [
        ("brushlabels", [name]) for name in CLASSES[1:]]  # one exact region per class
    assert [r["score"] for r in results] == [pytest.approx(confidence[mask == c].mean(), abs=1e-4) for c in (1, 2, 3)]
    assert np.array_equal(read_back(accepted(brush), "labelstudio", tmp_path)[0], mask)


def test_a_region_inside_a_hole_of_its_own_class_is_kept(tmp_path):
    mask = np.zeros((40, 40), dtype=np.int64)
    mask[5:35, 5:35] = 1
    mask[10:30, 10:30] = 0  # a hole in the ring, with an island of the ring's class, holding a window
    mask[15:25, 15:25] = 1
    mask[18:22, 18:22] = 2
    write_image(tmp_path / "p.png", mask.shape)
    for write, fmt in ((write_coco, "coco"), (write_cvat, "cvat")):
        path = write(tmp_path / f"{fmt}.out", [Prediction("p.png", mask)], CLASSES, tolerance=0, min_area=0)
        assert np.array_equal(read_back(path, fmt, tmp_path)[0], mask), fmt


def test_cvat_rle_starts_with_a_run_of_zeros():
    assert encode_cvat_rle(np.array([[0, 1, 1], [0, 0, 1]], dtype=bool)) == [1, 2, 2, 1]
    assert encode_cvat_rle(np.array([[1, 1], [0, 1]], dtype=bool)) == [0, 2, 1, 1]
    window = np.random.default_rng(0).random((5, 7)) > 0.5
    decoded = cvat_mask((encode_cvat_rle(window), 2, 3, 7, 5), 10, 10)
    assert np.array_equal(decoded[3:8, 2:9], window) and decoded.sum() == window.sum()


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
