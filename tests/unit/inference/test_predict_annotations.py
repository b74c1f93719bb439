"""`seglab predict --format cvat|labelstudio|coco` on the tiny model: the files read back through seglab's own readers
to the predicted PNG masks (exactly with --rle), and every object's score is the mean probability of its class over
its pixels, as `Predictor.predict_proba` gives it, for whole images and for large ones streamed in bands (--tile)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image

import seglab
from predict_helpers import write_tiny_checkpoint
from seglab.cli import main
from seglab.data.annotations.dataset import AnnotationDataset
from seglab.data.annotations.sources import AnnotationSplit
from seglab.data.options import FolderOptions
from training_helpers import register_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def blocks(folder, count: int = 2) -> list:
    """Images of flat colour blocks (48x40), on which the tiny model predicts regions, holes and a few specks."""
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        image = np.full((48, 40, 3), 128, dtype=np.uint8)
        image[8 + index:40, 6:34] = (250, 20, 20)
        image[18:28, 14 + index:24] = (20, 20, 250)
        image[30:36, 26:32] = 128
        paths.append(folder / f"block{index}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.ckpt")
    return checkpoint, seglab.load(checkpoint, precision="fp32")


def predict(checkpoint, photos, out, *options: str) -> None:
    assert main(["predict", str(checkpoint), str(photos), "--out", str(out), "--no-progress", "--precision", "fp32",
                 *options]) == 0


def class_scores(predictor, image, mask: np.ndarray, **options) -> dict[int, float]:
    """Each class's score computed apart from the writers: its pixels' mean top probability."""
    top = predictor.predict_proba(image, **options).max(axis=0)
    return {c: pytest.approx(float(top[mask == c].mean()), abs=2e-4) for c in np.unique(mask).tolist() if c}


def read_back(path, fmt: str, class_names) -> AnnotationDataset:
    return AnnotationDataset(AnnotationSplit(fmt, (path,)), FolderOptions(class_names=list(class_names)),
                             cache_folder=path.parent / "cache")


def test_predict_format_cvat(tmp_path, tiny):
    checkpoint, predictor = tiny
    images = blocks(tmp_path / "photos")
    names = predictor.spec.class_names
    out = tmp_path / "exact"
    predict(checkpoint, tmp_path / "photos", out, "--format", "cvat", "--rle")
    document = ElementTree.parse(out / "annotations.xml").getroot()
    for image, shapes in zip(images, document.iter("image"), strict=True):
        assert shapes.get("name") == image.name  # what CVAT matches the task's images by
        expected = class_scores(predictor, image, np.asarray(Image.open(out / f"{image.stem}.png")))
        assert {names.index(s.get("label")): float(s.find("attribute").text) for s in shapes} == expected
    (tmp_path / "photos" / "annotations.xml").write_text((out / "annotations.xml").read_text())  # beside them
    dataset = read_back(tmp_path / "photos" / "annotations.xml", "cvat", names)
    for index, image in enumerate(images):
        assert np.array_equal(dataset.load(index)[1], np.asarray(Image.open(out / f"{image.stem}.png")))
    predict(checkpoint, tmp_path / "photos", tmp_path / "polygons", "--format", "cvat")
    found = [shape for image in ElementTree.parse(tmp_path / "polygons" / "annotations.xml").iter("image")
             for shape in image]
    assert {shape.tag for shape in found} == {"polygon", "mask"}  # a region with holes is a mask
    assert all(0 <= float(shape.find("attribute").text) <= 1 for shape in found)


def test_predict_format_labelstudio(tmp_path, tiny):
    checkpoint, predictor = tiny
    images = blocks(tmp_path / "photos")
    names = predictor.spec.class_names
    out = tmp_path / "out"
    predict(checkpoint, tmp_path / "photos", out, "--format", "labelstudio", "--rle", "--image-prefix",
            "/data/local-files/?d=photos/")
    tasks = json.loads((out / "predictions.labelstudio.json").read_text())
    assert [task["data"]["image"] for task in tasks] == [f"/data/local-files/?d=photos/{p.name}" for p in images]
    for task, image in zip(tasks, images, strict=True):
        mask = np.asarray(Image.open(out / f"{image.stem}.png"))
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "seglab tiny.ckpt"
        top = predictor.predict_proba(image).max(axis=0)
        assert prediction["score"] == pytest.approx(top.mean(), abs=2e-4)
        assert {names.index(r["value"]["brushlabels"][0]): r["score"] for r in prediction["result"]} == \
            class_scores(predictor, image, mask)
        task["annotations"] = [{"result": prediction["result"]}]  # accepted by a person in Label Studio
    (tmp_path / "photos" / "tasks.json").write_text(json.dumps(tasks))
    dataset = read_back(tmp_path / "photos" / "tasks.json", "labelstudio", names)
    for index, image in enumerate(images):
        assert np.array_equal(dataset.load(index)[1], np.asarray(Image.open(out / f"{image.stem}.png")))
    predict(checkpoint, tmp_path / "photos" / "block0.png", tmp_path / "polygons", "--format", "labelstudio")
    (task,) = json.loads((tmp_path / "polygons" / "predictions.labelstudio.json").read_text())
    results = task["predictions"][0]["result"]
    assert results and all(r["type"] == "polygonlabels" and 0 <= r["score"] <= 1 for r in results)


def test_scores_of_an_image_streamed_in_bands(tmp_path, tiny):
    checkpoint, predictor = tiny
    (image,) = blocks(tmp_path / "photos", count=1)
    assert predictor.streams(48, 40, tile=16)  # --tile 16 predicts it band by band
    predict(checkpoint, image, tmp_path / "out", "--format", "coco", "--rle", "--tile", "16")
    document = json.loads((tmp_path / "out" / "predictions.coco.json").read_text())
    mask = np.asarray(Image.open(tmp_path / "out" / "block0.png"))
    assert {a["category_id"]: a["score"] for a in document["annotations"]} == \
        class_scores(predictor, image, mask, tile=16)


def test_skip_existing_never_writes_an_annotation_file_without_the_images_done_before(tmp_path, tiny, capsys):
    checkpoint, _ = tiny
    blocks(tmp_path / "photos")
    predict(checkpoint, tmp_path / "photos", tmp_path / "coco", "--format", "coco")
    whole = (tmp_path / "coco" / "predictions.coco.json").read_bytes()
    (tmp_path / "coco" / "block1.png").unlink()
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(tmp_path / "photos"), "--out", str(tmp_path / "coco"),
                 "--no-progress", "--precision", "fp32", "--format", "coco", "--skip-existing"]) == 2
    assert "would leave out the 1 whose masks exist already" in capsys.readouterr().err
    assert (tmp_path / "coco" / "predictions.coco.json").read_bytes() == whole

    predict(checkpoint, tmp_path / "photos", tmp_path / "labelme", "--format", "labelme")
    kept = (tmp_path / "labelme" / "block0.json").stat().st_mtime_ns
    (tmp_path / "labelme" / "block1.json").unlink()  # killed between block1's mask and its JSON
    predict(checkpoint, tmp_path / "photos", tmp_path / "labelme", "--format", "labelme", "--skip-existing")
    assert json.loads((tmp_path / "labelme" / "block1.json").read_text())["shapes"]
    assert (tmp_path / "labelme" / "block0.json").stat().st_mtime_ns == kept
