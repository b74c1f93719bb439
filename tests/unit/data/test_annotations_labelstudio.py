"""Label Studio JSON exports: polygons in percent coordinates, brush regions in Label Studio's own RLE, upload
prefixes on file names, and the named bad regions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from seglab.data.annotations.dataset import AnnotationDataset
from seglab.data.annotations.raster import decode_label_studio_rle, encode_label_studio_rle
from seglab.data.layouts import find_splits
from seglab.data.validation import check_annotations

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
WIDTH, HEIGHT = 40, 20

# label-studio-converter's encode_rle([0, 0, 0, 255, 255, 7]) with its default field sizes (word size 8, run
# sizes 3, 4, 8, 16): written out bit by bit from the format's definition, so the decoder is not checked only
# against its own encoder.
KNOWN_STREAM_VALUES = [0, 0, 0, 255, 255, 7]


def known_stream() -> list[int]:
    bits = format(6, "032b") + format(7, "05b") + "".join(format(size - 1, "04b") for size in (3, 4, 8, 16))
    bits += "1" + "00" + format(2, "03b") + format(0, "08b")  # 3 x 0
    bits += "1" + "00" + format(1, "03b") + format(255, "08b")  # 2 x 255
    bits += "0" + "00" + format(0, "03b") + format(7, "08b")  # 1 literal: 7
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def test_rle_codec():
    assert decode_label_studio_rle(known_stream()).tolist() == KNOWN_STREAM_VALUES
    rng = np.random.default_rng(0)
    values = np.repeat(rng.integers(0, 256, 50), rng.integers(1, 300, 50)).astype(np.uint8)
    assert np.array_equal(decode_label_studio_rle(encode_label_studio_rle(values)), values)


def brush_rle(mask: np.ndarray) -> list[int]:
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (255, 0, 0, 255)
    return encode_label_studio_rle(rgba.ravel())


def result(kind: str, value: dict, number: int) -> dict:
    return {"id": f"r{number}", "type": kind, "from_name": "tag", "to_name": "image", "original_width": WIDTH,
            "original_height": HEIGHT, "image_rotation": 0, "value": value}


def test_polygons_in_percent_and_brushes(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)).save(tmp_path / "images" / "street.png")
    brush = np.zeros((HEIGHT, WIDTH), dtype=bool)
    brush[10:15, 30:38] = True
    tasks = [{"id": 7, "data": {"image": "/data/upload/3/1a2b3c4d-street.png"}, "annotations": [
        {"id": 1, "was_cancelled": True, "result": []},
        {"id": 2, "was_cancelled": False, "result": [
            # (10 %, 0 %) .. (50 %, 50 %) of 40x20: x 4..20, y 0..10
            result("polygonlabels", {"points": [[10, 0], [50, 0], [50, 50], [10, 50]],
                                     "polygonlabels": ["road"]}, 0),
            result("brushlabels", {"format": "rle", "rle": brush_rle(brush), "brushlabels": ["car"]}, 1),
            result("polygonlabels", {"points": [[0, 0], [20, 0], [20, 20]], "polygonlabels": ["car"]}, 2),
        ]}]}]
    (tmp_path / "project-1-at-2024.json").write_text(json.dumps(tasks))
    layout = find_splits(tmp_path)
    assert layout.name == "labelstudio"
    dataset = AnnotationDataset(layout.splits["train"].annotations)
    assert dataset.class_names == ("background", "car", "road")
    mask = dataset.load(0)[1]
    assert (mask[0:10, 9:20] == 2).all() and (mask[:, 20:] != 2).all() and (mask[10:, :] != 2).all()
    assert (mask[brush] == 1).all() and (mask[:, 38:] == 0).all()  # the brush region, nothing beside it
    assert mask[0, 5] == 1  # the later car polygon over the road


def test_check_names_bad_regions(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    tasks = [{"id": 3, "data": {"image": "/data/local-files/?d=photos/missing.png"}, "annotations": [
        {"id": 1, "result": [result("polygonlabels", {"points": [[0, 0], [5, 5]], "polygonlabels": ["x"]}, 0)]}]}]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    report = check_annotations(find_splits(tmp_path, "labelstudio").splits["train"].annotations)
    assert [p.kind for p in report.problems] == ["missing"]
    assert "task 3 (/data/local-files/?d=photos/missing.png)" in str(report.problems[0])
