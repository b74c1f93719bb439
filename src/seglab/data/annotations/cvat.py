"""CVAT for images 1.1 XML (`annotations.xml`, with `images/`).

Drawing rules, those of CVAT's own segmentation-mask export (datumaro paints by `z_order`):
- order: `z_order` ascending, then document order, later over earlier;
- `<polygon>`: its points rasterised by pycocotools (as datumaro does); `<box>`: the filled rectangle
  xtl, ytl, xbr, ybr (its 4 corners as a polygon); `<mask>`: CVAT's RLE over its left/top/width/height box;
  `<polyline>`: a line 10 px wide (labelme's line width, the one rule seglab uses for line shapes);
  `<ellipse>`: filled; `<points>`, `<tag>`, skeletons and cuboids cover no area and are left out;
- classes: class 0 background (or a label named `background`), then the labels declared in `<meta>` in their
  order; a shape with a label not declared there is an `unknown-label` problem;
- splits: each `<image>`'s `subset` (Train, Validation, Test, case-insensitive); an export without subsets (or
  `default`) is all train.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path

from seglab.data.annotations.coco import find_image
from seglab.data.annotations.model import AnnotatedImage, AnnotatedObject
from seglab.data.files import FileProblem

CVAT_FILE = "annotations.xml"
_AREA_SHAPES = ("polygon", "box", "mask", "polyline", "ellipse")


def split_of(subset: str | None) -> str:
    """A CVAT subset name as seglab's split: train / val / test (`default` and unnamed are train)."""
    name = (subset or "").strip().lower()
    if name.startswith("val"):
        return "val"
    if name.startswith("test"):
        return "test"
    return "train"


def parse_points(text: str) -> list[tuple[float, ...]]:
    """CVAT's `x1,y1;x2,y2;...`."""
    return [tuple(float(v) for v in pair.split(",")) for pair in text.split(";") if pair.strip()]


def read_cvat(path: Path, image_folders: Sequence[Path] = ()) -> tuple[list[AnnotatedImage], list[str], list[str]]:
    """The images of a CVAT XML file (with their shapes in drawing order), the labels its `<meta>` declares, and
    each image's split (`split_of` its subset)."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise FileProblem(path, "unreadable", f"cannot read this CVAT XML ({error}); re-export it") from None
    if root.tag != "annotations":
        raise FileProblem(path, "unreadable", "is not a CVAT for images XML (its root is not <annotations>)")
    declared = [str(label.findtext("name")) for label in root.iter("label") if label.findtext("name")]
    folders = [path.parent / "images", path.parent, *image_folders]
    images, splits = [], []
    for element in root.iter("image"):
        name = element.get("name", "")
        subset = element.get("subset")
        image_path, looked = find_image(name, [*(f / subset for f in folders if subset), *folders])
        shapes = [(int(child.get("z_order", 0) or 0), number, child)
                  for number, child in enumerate(element) if child.tag in _AREA_SHAPES]
        objects = []
        for z_order, number, child in sorted(shapes, key=lambda item: (item[0], item[1])):
            object_id = f"{child.tag} {number} (z_order {z_order})"
            label = child.get("label", "")
            if child.tag == "polygon":
                points = parse_points(child.get("points", ""))
                geometry, kind = [[v for point in points for v in point]], "polygons"
            elif child.tag == "box":
                x1, y1, x2, y2 = (float(child.get(k, 0)) for k in ("xtl", "ytl", "xbr", "ybr"))
                geometry, kind = [[x1, y1, x2, y1, x2, y2, x1, y2]], "polygons"
            elif child.tag == "mask":
                counts = [int(v) for v in child.get("rle", "").split(",") if v.strip()]
                geometry = (counts, *(int(float(child.get(k, 0))) for k in ("left", "top", "width", "height")))
                kind = "cvat_mask"
            elif child.tag == "polyline":
                geometry, kind = parse_points(child.get("points", "")), "line"
            else:
                geometry = tuple(float(child.get(k, 0)) for k in ("cx", "cy", "rx", "ry"))
                kind = "ellipse"
            objects.append(AnnotatedObject(object_id, label, kind, geometry))
        height, width = element.get("height"), element.get("width")
        declared_size = (int(height), int(width)) if height and width else None
        images.append(AnnotatedImage(path, f"image {element.get('id')} ({name})", image_path, tuple(objects),
                                     declared_size, missing_image=looked and f"not found in {looked}"))
        splits.append(split_of(subset))
    return images, declared, splits
