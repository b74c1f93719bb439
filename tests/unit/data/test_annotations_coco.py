"""COCO exports read as they come: Roboflow's and CVAT's layouts, polygons, RLE with holes, crowd regions, the
Roboflow quirks, the mask cache and `seglab data check`'s named bad objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from seglab.data.annotations.dataset import AnnotationDataset
from seglab.data.annotations.sources import MaskCache
from seglab.data.layouts import find_splits
from seglab.data.options import DataOptions, FolderOptions
from seglab.data.validation import BadFiles, check_annotations, refuse_bad_files

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 32
FACADE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "facade_coco"


def square(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    # A polygon along pixel edges: pycocotools covers columns x0..x1-1 and rows y0..y1-1.
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def ring_rle() -> dict:
    """An uncompressed RLE of a 12x12 square at (4, 4) with a 4x4 hole at (8, 8)."""
    ring = np.zeros((SIZE, SIZE), dtype=np.uint8)
    ring[4:16, 4:16] = 1
    ring[8:12, 8:12] = 0
    flat = ring.flatten(order="F")  # COCO RLE runs down the columns
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [SIZE, SIZE], "counts": counts}


def write_image(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIZE, SIZE, 3), value, dtype=np.uint8)).save(path)


def roboflow_export(root: Path) -> Path:
    """train/ and valid/ with `_annotations.coco.json`, Roboflow's parent category 0 and a repeated name, one valid
    image in valid/images/."""
    categories = [{"id": 0, "name": "thing", "supercategory": "none"},
                  {"id": 1, "name": "wall", "supercategory": "thing"},
                  {"id": 2, "name": "window", "supercategory": "thing"},
                  {"id": 3, "name": "thing", "supercategory": "thing"}]
    compressed = coco_mask.encode(np.asfortranarray(np.pad(np.ones((4, 4), np.uint8), ((24, 4), (24, 4)))))
    train = {
        "images": [{"id": 0, "file_name": "a.jpg", "width": SIZE, "height": SIZE},
                   {"id": 1, "file_name": "b.jpg", "width": SIZE, "height": SIZE}],
        "categories": categories,
        "annotations": [
            {"id": 10, "image_id": 0, "category_id": 1, "segmentation": [square(0, 0, 20, 20)], "iscrowd": 0},
            # overlaps the wall, drawn later: wins
            {"id": 11, "image_id": 0, "category_id": 2, "segmentation": [square(10, 10, 30, 30)], "iscrowd": 0},
            # two polygons of one object
            {"id": 12, "image_id": 1, "category_id": 2,
             "segmentation": [square(0, 0, 4, 4), square(28, 0, 32, 4)], "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 1, "segmentation": ring_rle(), "iscrowd": 0},
            {"id": 14, "image_id": 1, "category_id": 3, "iscrowd": 1,
             "segmentation": {"size": [SIZE, SIZE], "counts": compressed["counts"].decode()}},
        ],
    }
    valid = {"images": [{"id": 0, "file_name": "c.jpg", "width": SIZE, "height": SIZE}], "categories": categories,
             "annotations": [{"id": 1, "image_id": 0, "category_id": 3, "segmentation": [square(0, 0, 8, 8)],
                              "iscrowd": 0}]}
    for split, data, images in (("train", train, ["a.jpg", "b.jpg"]), ("valid", valid, ["images/c.jpg"])):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
        for name in images:
            write_image(root / split / name)
    return root


def test_roboflow_export_classes_overlaps_holes_crowd(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    layout = find_splits(roboflow_export(tmp_path / "export"))
    assert layout.name == "coco" and set(layout.splits) == {"train", "val"}
    train = AnnotationDataset(layout.splits["train"].annotations)
    # Roboflow's parent "thing" (id 0, unused) is dropped, so 0 stays background; the second "thing" keeps its id.
    assert train.class_names == ("background", "wall", "window", "thing")
    overlap = train.load(0)[1]
    expected = np.zeros((SIZE, SIZE), dtype=np.int64)
    expected[0:20, 0:20] = 1
    expected[10:30, 10:30] = 2
    assert np.array_equal(overlap, expected)
    parts = train.load(1)[1]
    assert (parts[0:4, 0:4] == 2).all() and (parts[0:4, 28:32] == 2).all()
    assert (parts[4:16, 4:16][parts[4:16, 4:16] != 1] == 0).all() and (parts[8:12, 8:12] == 0).all()  # the hole
    assert (parts[4:8, 4:16] == 1).all()
    assert (parts[24:28, 24:28] == 255).all() and (parts == 255).sum() == 16  # crowd region: ignore_index
    crowd_as_class = AnnotationDataset(layout.splits["train"].annotations, crowd="class").load(1)[1]
    assert (crowd_as_class[24:28, 24:28] == 3).all()
    val = AnnotationDataset(layout.splits["val"].annotations)  # its image lies in valid/images/
    assert val.class_names == train.class_names and (val.load(0)[1][0:8, 0:8] == 3).all()


def test_masks_are_rasterised_once_per_annotation_file_version(tmp_path, monkeypatch):
    root = roboflow_export(tmp_path / "export")
    split = find_splits(root).splits["train"].annotations
    dataset = AnnotationDataset(split, cache_folder=tmp_path / "cache")
    first = dataset.load(0)[1]
    cached = dataset.cache.path(dataset.images[0], (SIZE, SIZE))
    assert cached.is_file()
    calls = []
    monkeypatch.setattr("seglab.data.annotations.sources.paint", lambda *a, **k: calls.append(a))
    assert np.array_equal(dataset.load(0)[1], first) and not calls  # read from the cache, not drawn again
    data = json.loads((root / "train" / "_annotations.coco.json").read_text())
    data["annotations"][1]["category_id"] = 1
    (root / "train" / "_annotations.coco.json").write_text(json.dumps(data))
    edited = AnnotationDataset(split, cache_folder=tmp_path / "cache")
    assert edited.cache.path(edited.images[0], (SIZE, SIZE)) != cached  # new content, new cache entry


def test_cvat_coco_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cvat"
    for subset in ("train", "val"):
        data = {"images": [{"id": 1, "file_name": f"{subset}1.png", "width": SIZE, "height": SIZE}],
                "categories": [{"id": 1, "name": "car", "supercategory": ""}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square(2, 2, 6, 6)],
                                 "iscrowd": 0}]}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(data))
        write_image(root / "images" / subset / f"{subset}1.png")
    layout = find_splits(root, "coco")
    assert set(layout.splits) == {"train", "val"}
    mask = AnnotationDataset(layout.splits["val"].annotations).load(0)[1]
    assert mask.sum() == 16 and (mask[2:6, 2:6] == 1).all()


def test_check_names_each_bad_object(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    root = roboflow_export(tmp_path / "export")
    path = root / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["images"].append({"id": 2, "file_name": "gone.jpg", "width": SIZE, "height": SIZE})
    data["images"][1]["width"] = 64
    data["annotations"] += [
        {"id": 20, "image_id": 0, "category_id": 1, "segmentation": [[1, 1, 5, 5]], "iscrowd": 0},
        {"id": 21, "image_id": 0, "category_id": 1, "segmentation": [square(-3, 0, 10, 40)], "iscrowd": 0},
        {"id": 22, "image_id": 0, "category_id": 9, "segmentation": [square(0, 0, 4, 4)], "iscrowd": 0},
    ]
    path.write_text(json.dumps(data))
    report = check_annotations(find_splits(root).splits["train"].annotations)
    text = report.summary()
    assert not report.ok
    tags = {(p.kind, str(p).split(": ", 1)[1].split(":")[0]) for p in [*report.problems, *report.warnings]}
    assert ("missing", "image 2 (gone.jpg)") in tags
    assert ("size-mismatch", "image 1 (b.jpg)") in tags
    assert ("bad-shape", "image 0 (a.jpg), annotation 20") in tags
    assert ("outside-image", "image 0 (a.jpg), annotation 21") in tags
    assert ("unknown-label", "image 0 (a.jpg), annotation 22") in tags
    assert str(path) in text
    # Training refuses the problems (not the warnings) before its first step, naming them.
    dataset = AnnotationDataset(find_splits(root).splits["train"].annotations)
    with pytest.raises(BadFiles) as refused, pytest.warns(UserWarning, match="drawn clipped or left out"):
        refuse_bad_files([dataset], "training")
    assert {p.kind for p in refused.value.problems} == {"missing", "size-mismatch", "unknown-label"}


def test_training_options_reach_the_export(tmp_path, monkeypatch):
    from seglab.data.datasets import build_datasets

    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    root = roboflow_export(tmp_path / "export")
    datasets = build_datasets(DataOptions(dataset="folder", data_root=str(root), image_size=16,
                                          folder=FolderOptions(class_names=["background", "wall", "window", "thing"])),
                              echo=lambda text: None)
    image, mask = datasets["train"][0]
    assert image.shape == (3, 16, 16) and mask.shape == (16, 16) and set(mask.unique().tolist()) <= {0, 1, 2}


def coco_area(polygons: list) -> float:
    return sum(abs(float(np.dot(p[0::2], np.roll(p[1::2], 1)) - np.dot(p[1::2], np.roll(p[0::2], 1)))) / 2
               for p in map(np.asarray, polygons))


def test_smaller_objects_are_drawn_over_larger_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    root = roboflow_export(tmp_path / "export")
    path = root / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    # A small window listed before the wall it sits on: it stays visible.
    data["annotations"][0:2] = [
        {"id": 11, "image_id": 0, "category_id": 2, "segmentation": [square(4, 4, 8, 8)], "iscrowd": 0},
        {"id": 10, "image_id": 0, "category_id": 1, "segmentation": [square(0, 0, 20, 20)], "iscrowd": 0},
    ]
    path.write_text(json.dumps(data))
    mask = AnnotationDataset(find_splits(root).splits["train"].annotations).load(0)[1]
    assert (mask[4:8, 4:8] == 2).all() and (mask == 2).sum() == 16 and (mask == 1).sum() == 400 - 16


def test_real_roboflow_export(tmp_path):
    if not FACADE.is_dir():
        pytest.skip(f"the shared facade export is not at {FACADE}")
    layout = find_splits(FACADE)
    assert layout.name == "coco" and set(layout.splits) == {"train", "val", "test"}
    split = layout.splits["val"].annotations
    dataset = AnnotationDataset(split, cache_folder=tmp_path / "cache")
    assert dataset.class_names[0] == "background" and "facade" in dataset.class_names and len(dataset.class_names) == 11
    in_subfolder = [i for i, image in enumerate(dataset.images) if image.image_path.parent.name == "images"]
    assert len(in_subfolder) == 24  # the README's quirk: found all the same
    for index in (0, in_subfolder[0]):
        rgb, mask = dataset.load(index)
        assert rgb.shape == (1024, 1024, 3) and mask.shape == (1024, 1024)
        assert len(np.unique(mask)) > 2
    # Exactly what pycocotools draws for the objects, larger first (equal areas in file order).
    image = dataset.images[0]
    expected = np.zeros((1024, 1024), dtype=np.int64)
    areas = [float(a) for a in (obj.geometry and coco_area(obj.geometry) for obj in image.objects)]
    assert areas == sorted(areas, reverse=True)
    for obj in image.objects:
        region = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(obj.geometry, 1024, 1024))).astype(bool)
        expected[region] = obj.label
    assert np.array_equal(dataset.load(0)[1], expected)
    assert isinstance(dataset.cache, MaskCache)


def test_the_crowd_config_key_reaches_the_dataset(tmp_path, monkeypatch):
    from seglab.data.datasets import folder_datasets
    from seglab.errors import ConfigError
    from seglab.training.config import make_config

    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    root = roboflow_export(tmp_path / "export")
    base = {"dataset": "folder", "data_root": str(root), "image_size": SIZE, "runs_dir": str(tmp_path / "runs")}
    for rule, painted in (("ignore", 255), ("class", 3)):
        train = folder_datasets(make_config({**base, "crowd": rule}).data, echo=lambda line: None)["train"]
        assert (train.load(1)[1][24:28, 24:28] == painted).all(), rule
    with pytest.raises(ConfigError, match="config key 'crowd' is 'bogus'; valid values: ignore, class"):
        make_config({**base, "crowd": "bogus"})
