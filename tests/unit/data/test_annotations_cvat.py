"""CVAT for images 1.1 XML: polygons, boxes, polylines and masks drawn by z_order, splits from subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.annotations.dataset import AnnotationDataset
from seglab.data.layouts import find_splits
from seglab.data.validation import check_annotations

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><labels>
    <label><name>road</name></label><label><name>car</name></label><label><name>line</name></label>
  </labels></task></meta>
  <image id="0" name="a.png" width="32" height="32" subset="Train">
    <box label="car" occluded="0" source="manual" xtl="4" ytl="4" xbr="12" ybr="12" z_order="1"/>
    <polygon label="road" occluded="0" source="manual" points="0,0;32,0;32,16;0,16" z_order="0"/>
    <mask label="car" source="manual" occluded="0" rle="1, 2, 2, 1" left="20" top="20" width="3" height="2"
          z_order="2"/>
    <polyline label="line" source="manual" occluded="0" points="0,26;31,26" z_order="0"/>
  </image>
  <image id="1" name="b.png" width="32" height="32" subset="Validation">
    <polygon label="truck" occluded="0" source="manual" points="0,0;4,0;4,4" z_order="0"/>
    <polygon label="car" occluded="0" source="manual" points="0,0;4,4" z_order="0"/>
  </image>
</annotations>
"""


def write_export(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations.xml").write_text(XML)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "images" / name)
    return root


def test_shapes_by_z_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    layout = find_splits(write_export(tmp_path / "cvat"))
    assert layout.name == "cvat" and set(layout.splits) == {"train", "val"}
    dataset = AnnotationDataset(layout.splits["train"].annotations)
    assert dataset.class_names == ("background", "road", "car", "line")  # declared order
    mask = dataset.load(0)[1]
    # The box (z 1) is over the road polygon (z 0) though written before it.
    assert (mask[4:12, 4:12] == 2).all() and mask[2, 2] == 1 and mask[20, 2] != 1
    # CVAT mask RLE over its 3x2 box at (20, 20): runs 1 off, 2 on, 2 off, 1 on, row by row: 0 1 1 / 0 0 1.
    assert mask[20, 20] == 0 and mask[20, 21] == 2 and mask[20, 22] == 2
    assert mask[21, 20] == 0 and mask[21, 21] == 0 and mask[21, 22] == 2 and mask[20, 23] == 0
    assert np.flatnonzero(mask[:, 5] == 3).tolist() == list(range(22, 32))  # a polyline 10 px wide


def test_check_names_unknown_label_and_short_polygon(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    layout = find_splits(write_export(tmp_path / "cvat"))
    report = check_annotations(layout.splits["val"].annotations)
    found = {(p.kind, str(p).split(": ")[1]) for p in [*report.problems, *report.warnings]}
    assert ("unknown-label", "image 1 (b.png), polygon 0 (z_order 0)") in found
    assert ("bad-shape", "image 1 (b.png), polygon 1 (z_order 0)") in found
