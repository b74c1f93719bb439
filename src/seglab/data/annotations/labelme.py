"""LabelMe JSON, one file per image (`shapes`, `imagePath`, `imageData`).

Drawing rules, those of labelme's `examples/semantic_segmentation/labelme2voc.py` (`shapes_to_label`):
- order: `shapes` in file order, later over earlier;
- each shape covers what labelme's `shape_to_mask` draws (`seglab.data.annotations.raster.labelme_shape_mask`):
  polygon (3 points or more), rectangle, circle (centre + rim point), line and linestrip 10 px wide, point a disc
  of radius 5, mask (its bitmap at its first point). A polygon has no holes (labelme cannot draw one);
- labels: `_background_` (and `background`) is class 0, `__ignore__` is ignore_index (labelme2voc writes -1,
  which its PNG stores as 255), the others are classes 1..K in name order over all the dataset's files (or the
  index of the name in `class_names`);
- the image: `imagePath`, relative to the JSON's folder (Windows separators accepted); when no file is there,
  `imageData` (base64, embedded). labelme2voc.py reads `imageData` first when the JSON has both: they hold the
  same picture unless the file was edited after annotating, which the size check catches.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from seglab.data.annotations.coco import load_json
from seglab.data.annotations.model import AnnotatedImage, AnnotatedObject
from seglab.data.annotations.raster import labelme_bitmap
from seglab.data.files import FileProblem

BACKGROUND_LABELS = ("_background_", "background")
IGNORE_LABEL = "__ignore__"


def is_labelme(data: Any) -> bool:
    """A parsed JSON that is a LabelMe annotation."""
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and ("imagePath" in data
                                                                                 or "imageData" in data)


def read_labelme(path: Path) -> AnnotatedImage:
    """The image of one LabelMe JSON and its shapes in drawing order."""
    data = load_json(path, "LabelMe file")
    if not is_labelme(data):
        raise FileProblem(path, "unreadable", "is not a LabelMe annotation (no shapes / imagePath)")
    image_name = (data.get("imagePath") or "").replace("\\", "/")  # LabelMe on Windows writes ..\\images\\a.jpg
    image_path = (path.parent / image_name) if image_name else None
    embedded = None
    if image_path is None or not image_path.is_file():
        image_path = None
        if data.get("imageData"):
            embedded = base64.b64decode(data["imageData"])
    objects = []
    for number, shape in enumerate(data["shapes"]):
        shape_type = shape.get("shape_type") or "polygon"
        points = [tuple(float(v) for v in point) for point in shape.get("points") or []]
        bitmap = labelme_bitmap(shape["mask"]) if shape_type == "mask" and shape.get("mask") else None
        objects.append(AnnotatedObject(f"shape {number} ({shape_type})", str(shape.get("label", "")), "labelme",
                                       (shape_type, points, bitmap)))
    height, width = data.get("imageHeight"), data.get("imageWidth")
    return AnnotatedImage(path, f"image {image_name or '(embedded)'}", image_path, tuple(objects),
                          (int(height), int(width)) if height and width else None, image_data=embedded,
                          missing_image="" if image_path or embedded else
                          f"{path.parent / image_name} does not exist and the JSON embeds no imageData")


def shape_problem(shape_type: str, points: list, bitmap: Any) -> str:
    """Why a LabelMe shape cannot be drawn (labelme's own asserts), or "" when it can."""
    counts = {"circle": 2, "rectangle": 2, "line": 2, "point": 1}
    if shape_type in counts and len(points) != counts[shape_type]:
        return f"a {shape_type} needs {counts[shape_type]} points, it has {len(points)}"
    if shape_type == "linestrip" and len(points) < 2:
        return f"a linestrip needs 2 points or more, it has {len(points)}"
    if shape_type == "mask" and (bitmap is None or len(points) < 1):
        return "a mask shape needs its bitmap and a first point"
    if shape_type not in (*counts, "linestrip", "mask") and len(points) < 3:
        return f"a polygon needs 3 points or more, it has {len(points)}"
    return ""
