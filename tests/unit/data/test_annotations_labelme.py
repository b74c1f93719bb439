"""LabelMe folders read as labelme2voc.py draws them: every shape type, file order, `__ignore__`, embedded
images, `imagePath` relative to the JSON, and the named bad shapes."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.annotations.dataset import AnnotationDataset
from seglab.data.layouts import find_splits
from seglab.data.validation import check_annotations

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 40


def png_bytes(value: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def shape(label: str, points: list, shape_type: str = "polygon") -> dict:
    return {"label": label, "points": points, "shape_type": shape_type, "group_id": None, "flags": {}}


def write_labelme(path: Path, shapes: list[dict], *, image_path: str | None = None, embed: bool = False,
                  size: int = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path or f"{path.stem}.png",
            "imageData": base64.b64encode(png_bytes()).decode() if embed else None,
            "imageHeight": size, "imageWidth": size}
    path.write_text(json.dumps(data))


def test_shapes_drawn_like_labelme2voc(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "labelme"
    (root / "photos").mkdir(parents=True)
    (root / "photos" / "a.png").write_bytes(png_bytes())
    write_labelme(root / "a.json", [
        shape("wall", [[0, 0], [19, 0], [19, 19], [0, 19]]),
        shape("door", [[10, 10], [15, 15]], "rectangle"),  # over the wall: later wins
        shape("lamp", [[30, 30], [33, 30]], "circle"),
        shape("cable", [[0, 35], [39, 35]], "line"),
        shape("nail", [[30, 8]], "point"),
        shape("__ignore__", [[2, 2], [5, 2], [5, 5], [2, 5]]),
    ], image_path="photos\\a.png")  # relative to the JSON, written by LabelMe on Windows
    write_labelme(root / "b.json", [shape("wall", [[0, 0], [10, 0], [0, 10]])], embed=True, image_path="nowhere.png")
    layout = find_splits(root)
    assert layout.name == "labelme"
    dataset = AnnotationDataset(layout.splits["train"].annotations)
    assert dataset.class_names == ("background", "cable", "door", "lamp", "nail", "wall")  # names in order
    mask = dataset.load(0)[1]
    # PIL's rectangle includes both corners: 6x6 pixels.
    assert (mask == 2).sum() == 36 and (mask[10:16, 10:16] == 2).all()
    assert (mask[2:6, 2:6] == 255).all()  # __ignore__ -> ignore_index, as labelme2voc's -1 stored as 255
    assert mask[19, 0] == 5 and mask[0, 19] == 5 and mask[20, 0] == 0  # the polygon outline is drawn too
    assert mask[30, 30] == 3 and mask[30, 28] == 3 and mask[30, 25] == 0 and mask[30, 35] == 0  # radius 3
    cable_rows = np.flatnonzero(mask[:, 20] == 1)
    assert cable_rows.tolist() == list(range(31, 40))  # 10 px wide around row 35 (31..40), cut at the image edge
    assert mask[8, 30] == 4 and mask[8, 25] == 4 and mask[8, 24] == 0  # point: disc of radius 5
    rgb, embedded_mask = dataset.load(1)  # the image comes from imageData
    assert rgb.shape == (SIZE, SIZE, 3) and int(rgb[0, 0, 0]) == 90 and embedded_mask[2, 2] == 5


def test_split_folders_and_class_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    for split, label in (("train", "cat"), ("val", "dog")):
        (tmp_path / split).mkdir()
        (tmp_path / split / "x.png").write_bytes(png_bytes())
        write_labelme(tmp_path / split / "x.json", [shape(label, [[0, 0], [9, 0], [9, 9]])])
    layout = find_splits(tmp_path, "labelme")
    train = AnnotationDataset(layout.splits["train"].annotations)
    val = AnnotationDataset(layout.splits["val"].annotations)
    assert train.class_names == val.class_names == ("background", "cat", "dog")  # over all the splits


def test_check_names_bad_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    write_labelme(tmp_path / "a.json", [
        shape("wall", [[0, 0], [5, 5]]),  # a polygon of 2 points
        shape("wall", [[0, 0], [50, 0], [50, 10]]),  # reaches outside the 40x40 image
    ], embed=True)
    write_labelme(tmp_path / "b.json", [shape("wall", [[0, 0], [5, 0], [5, 5]])], image_path="b.png")  # no image
    (tmp_path / "c.png").write_bytes(png_bytes())
    write_labelme(tmp_path / "c.json", [], size=64)  # the JSON says 64x64
    report = check_annotations(find_splits(tmp_path).splits["train"].annotations)
    found = {(p.kind, p.path.name, str(p).split(": ")[1]) for p in [*report.problems, *report.warnings]}
    assert ("bad-shape", "a.json", "image a.png, shape 0 (polygon)") in found
    assert ("outside-image", "a.json", "image a.png, shape 1 (polygon)") in found
    assert ("missing", "b.json", "image b.png") in found
    assert ("size-mismatch", "c.json", "image c.png") in found
    assert not report.ok and len(report.problems) == 2 and len(report.warnings) == 2
