"""COCO instance / stuff JSON (Roboflow, CVAT "COCO 1.0", Label Studio's COCO export, detectron2 and mmdet files).

Drawing rules (`seglab.data.annotations.model` has the rule all formats share):
- order: larger objects first, smaller ones over them (equal areas in the `annotations` list's order). COCO
  instances carry no drawing order, and the list's order is whatever the tool wrote: painted in list order, as
  cocostuffapi's `cocoSegmentationToSegmentationMap` does, 39.5 % of the window pixels of the facade export
  (../shared/data/facade_coco, 25 train images) vanish under facade polygons listed after them; by area, a
  window stays on its facade. For stuff annotations, which do not overlap, the order changes nothing;
- `segmentation` as a list of polygons: their union, rasterised by pycocotools (several polygons per object are
  parts of one object; a polygon with fewer than 3 points covers nothing); as RLE (compressed `counts` string or
  uncompressed list): decoded by pycocotools, holes included;
- `iscrowd: 1`: ignore_index by default (`crowd="class"` paints the class);
- classes: category ids in increasing order become classes 1..K, with class 0 = background, unless a category has
  id 0, which then is class 0 (ids 1..K without gaps, Roboflow's and CVAT's, keep their number as class index);
- Roboflow's parent category (the one whose name is the `supercategory` of the others and that no annotation uses,
  id 0 in Roboflow exports) is not a class, so 0 stays background; two categories sharing a name become
  `name (id N)`;
- an annotation whose `category_id` is not in `categories` is an `unknown-label` problem.

Images are looked for, by `file_name` and by its base name, beside the JSON, in its `images/` folder (Roboflow
puts some there) and in the layout's image folders (CVAT: `images/<subset>/`, `images/`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seglab.data.annotations.model import AnnotatedImage, AnnotatedObject
from seglab.data.files import FileProblem

ROBOFLOW_FILE = "_annotations.coco.json"


def load_json(path: Path, what: str) -> Any:
    """A JSON file's content, or a FileProblem ("unreadable") naming it."""
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as error:
        raise FileProblem(path, "unreadable", f"cannot read this {what} ({error}); re-export it") from None


def is_coco(data: Any) -> bool:
    """A parsed JSON that is a COCO annotation file."""
    return isinstance(data, dict) and isinstance(data.get("images"), list) and "categories" in data


def find_image(file_name: str, folders: Sequence[Path]) -> tuple[Path | None, str]:
    """The image `file_name` names, looked for in `folders` (with its path, then by base name), and where it
    was looked for."""
    file_name = file_name.replace("\\", "/")  # written on Windows
    names = [file_name, Path(file_name).name] if Path(file_name).name != file_name else [file_name]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate, ""
    return None, ", ".join(str(folder) for folder in folders)


def read_coco(path: Path, image_folders: Sequence[Path] = ()) -> tuple[list[AnnotatedImage], list[dict], set]:
    """The images of a COCO file with their objects in drawing order, its `categories` and the category ids
    its annotations use."""
    data = load_json(path, "COCO annotation file")
    if not is_coco(data):
        raise FileProblem(path, "unreadable", "is not a COCO annotation file (no images / categories lists)")
    folders = [path.parent, path.parent / "images", *image_folders]
    categories = [c for c in data.get("categories") or [] if isinstance(c, dict) and "id" in c]
    by_image: dict[Any, list[AnnotatedObject]] = {}
    used = set()
    for number, annotation in enumerate(data.get("annotations") or []):
        object_id = f"annotation {annotation.get('id', f'#{number}')}"
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, dict):
            kind = "rle"
        else:
            kind = "polygons"
            segmentation = segmentation if isinstance(segmentation, list) else []
            if segmentation and not isinstance(segmentation[0], list):
                segmentation = [segmentation]  # a single flat polygon, as some writers store it
        used.add(annotation.get("category_id"))
        by_image.setdefault(annotation.get("image_id"), []).append(AnnotatedObject(
            object_id, annotation.get("category_id"), kind, segmentation, crowd=bool(annotation.get("iscrowd", 0))))
    for objects in by_image.values():
        objects.sort(key=lambda obj: -object_area(obj))  # stable: equal areas keep the file's order
    images = []
    for entry in data["images"]:
        file_name = str(entry.get("file_name", ""))
        image_path, looked = find_image(file_name, folders)
        declared = (int(entry["height"]), int(entry["width"])) if entry.get("height") and entry.get("width") else None
        images.append(AnnotatedImage(path, f"image {entry.get('id')} ({file_name})", image_path,
                                     tuple(by_image.get(entry.get("id"), ())), declared,
                                     missing_image=looked and f"not found in {looked}"))
    return images, categories, used


def object_area(obj: AnnotatedObject) -> float:
    """The area of a COCO object's segmentation, in pixels: its polygons' (shoelace), or its RLE's."""
    if obj.kind == "rle":
        counts = obj.geometry.get("counts") if isinstance(obj.geometry, dict) else None
        if isinstance(counts, list):
            return float(sum(counts[1::2]))
        if isinstance(counts, (str, bytes)):
            from pycocotools import mask as coco_mask

            return float(coco_mask.area({"size": obj.geometry["size"],
                                         "counts": counts.encode() if isinstance(counts, str) else counts}))
        return 0.0
    total = 0.0
    for polygon in obj.geometry:
        if isinstance(polygon, list) and len(polygon) >= 6:
            x, y = np.asarray(polygon[0::2], dtype=float), np.asarray(polygon[1::2], dtype=float)
            total += abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2
    return total


def roboflow_parents(categories: list[dict], used: set) -> set:
    """Ids of Roboflow's parent categories: used by no annotation, and named as the supercategory of others."""
    supercategories = {c.get("supercategory") for c in categories if c.get("name") != c.get("supercategory")}
    return {c["id"] for c in categories if c["id"] not in used and c.get("name") in supercategories}
