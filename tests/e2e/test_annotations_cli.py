"""The command line on annotation exports: `seglab data check` names bad objects, `seglab data convert` writes
palette PNG masks, the class list and a config that `seglab data check --config` reads back, and
`seglab train` trains on a COCO export pointed at with data_root, and `seglab predict --format` writes annotations
that read back to its masks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
SIZE = 32


def seglab(*args: str, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGLAB_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "seglab", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def coco_export(root):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("valid", 2)):
        folder = root / split
        folder.mkdir(parents=True)
        images, annotations = [], []
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
            images.append({"id": i, "file_name": f"{i}.jpg", "width": SIZE, "height": SIZE})
            x = 2 + i
            annotations.append({"id": 100 + i, "image_id": i, "category_id": 1 + i % 2, "iscrowd": 0,
                                "segmentation": [[x, 4, x + 16, 4, x + 16, 20, x, 20]]})
        data = {"images": images, "annotations": annotations,
                "categories": [{"id": 0, "name": "things", "supercategory": "none"},
                               {"id": 1, "name": "roof", "supercategory": "things"},
                               {"id": 2, "name": "door", "supercategory": "things"}]}
        (folder / "_annotations.coco.json").write_text(json.dumps(data))
    return root


def test_check_convert_and_train(tmp_path):
    root = coco_export(tmp_path / "export")
    checked = seglab("data", "check", "--root", str(root), cache=tmp_path / "cache")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "layout coco" in checked.stdout and "no problems in train, val" in checked.stdout

    converted = seglab("data", "convert", str(root), "--to", "masks", str(tmp_path / "masks"), cache=tmp_path / "c")
    assert converted.returncode == 0, converted.stdout + converted.stderr
    assert (tmp_path / "masks" / "classes.txt").read_text().split() == ["background", "roof", "door"]
    mask = Image.open(tmp_path / "masks" / "masks" / "train" / "0.png")
    assert mask.mode == "P" and (np.asarray(mask)[4:20, 2:18] == 1).all()
    again = seglab("data", "check", "--config", str(tmp_path / "masks" / "seglab.yaml"), cache=tmp_path / "c")
    assert again.returncode == 0 and "layout images_masks" in again.stdout, again.stdout + again.stderr

    config = tmp_path / "coco.yaml"
    config.write_text(f"name: coco\ndataset: folder\ndata_root: {json.dumps(str(root))}\nimage_size: 32\n"
                      "model: fcn_vgg16\nbatch_size: 2\nmax_epochs: 1\nprogress_bar: false\n"
                      f"test_after_training: false\nruns_dir: {json.dumps(str(tmp_path / 'runs'))}\n")
    trained = seglab("train", str(config), cache=tmp_path / "cache")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "layout coco" in trained.stdout + trained.stderr
    assert (tmp_path / "runs" / "coco" / "checkpoints" / "best.ckpt").is_file()
    assert_predictions_read_back(tmp_path / "runs" / "coco", root / "valid", tmp_path)


def assert_predictions_read_back(run, images, tmp_path):
    """predict --format coco --rle, read back by seglab's COCO reader: the predicted PNG masks exactly; predict
    --format labelme: one JSON per image naming the image and the model's classes. (A model trained for one epoch
    on noise predicts specks, which polygons drop by rule: the >= 99 % polygon round trip is checked on controlled
    masks in tests/unit/data/test_annotations_export.py.)"""
    from seglab.data.annotations.dataset import AnnotationDataset
    from seglab.data.annotations.sources import AnnotationSplit

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0.jpg", "1.jpg"):
        (photos / name).write_bytes((images / name).read_bytes())
    class_names = (tmp_path / "masks" / "classes.txt").read_text().split()
    out = tmp_path / "predicted_coco"
    predicted = seglab("predict", str(run), str(photos), "--out", str(out), "--format", "coco", "--rle",
                       "--no-progress", cache=tmp_path / "cache")
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    document = json.loads((out / "predictions.coco.json").read_text())
    assert [image["file_name"] for image in document["images"]] == ["0.jpg", "1.jpg"]
    (photos / "predictions.coco.json").write_text(json.dumps(document))  # beside the images, as in a tool
    dataset = AnnotationDataset(AnnotationSplit("coco", (photos / "predictions.coco.json",)),
                                cache_folder=tmp_path / "read")
    for index, name in enumerate(("0", "1")):
        assert np.array_equal(dataset.load(index)[1], np.asarray(Image.open(out / f"{name}.png")))
    out = tmp_path / "predicted_labelme"
    predicted = seglab("predict", str(run), str(photos), "--out", str(out), "--format", "labelme", "--no-progress",
                       cache=tmp_path / "cache")
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    for name in ("0", "1"):
        document = json.loads((out / f"{name}.json").read_text())
        assert document["imagePath"] == f"../photos/{name}.jpg"
        assert {shape["label"] for shape in document["shapes"]} <= {*class_names[1:], "_background_"}
        assert all(len(shape["points"]) >= 3 for shape in document["shapes"])


def test_check_names_bad_objects(tmp_path):
    root = coco_export(tmp_path / "export")
    path = root / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 7
    data["images"][1]["file_name"] = "missing.jpg"
    path.write_text(json.dumps(data))
    checked = seglab("data", "check", "--root", str(root), cache=tmp_path / "cache")
    assert checked.returncode == 1
    assert "[unknown-label]" in checked.stdout and "image 0 (0.jpg), annotation 100" in checked.stdout
    assert "[missing]" in checked.stdout and "image 1 (missing.jpg)" in checked.stdout
