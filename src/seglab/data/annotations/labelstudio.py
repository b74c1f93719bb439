"""Label Studio JSON export (a list of tasks, "JSON" or "JSON-MIN"-less full export).

Drawing rules:
- which annotation: each task's first annotation that was not cancelled (`was_cancelled`); tasks without one
  are left out;
- order: the annotation's `result` list in order, later over earlier;
- `polygonlabels`: `points` in percent of `original_width` / `original_height` (x * width / 100, as
  label-studio-converter converts them), rasterised by pycocotools like COCO polygons;
- `brushlabels`: Label Studio's RLE of an RGBA image, decoded as label-studio-converter's `brush.py` does;
  covered where alpha >= 128;
- `rectanglelabels`: x, y, width, height in percent, the filled rectangle (rotation is not supported: a
  rotated rectangle is a `bad-shape` problem); other result types cover no area and are left out;
- classes: 0 background (or a label named `background`), then the labels in name order;
- the image: `data.image`'s file name (an upload's `1a2b3c4d-` prefix removed, `?d=` local-file paths
  followed), looked for beside the JSON, in its `images/` folder and in the layout's image folders.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from seglab.data.annotations.coco import find_image, load_json
from seglab.data.annotations.model import AnnotatedImage, AnnotatedObject
from seglab.data.files import FileProblem

# Label Studio prefixes uploaded files with 8 hex digits and a dash.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_LABEL_KEYS = {"polygonlabels": "polygonlabels", "brushlabels": "brushlabels", "rectanglelabels": "rectanglelabels"}


def is_label_studio(data: Any) -> bool:
    """A parsed JSON that is a Label Studio export: a list of tasks with `data` and `annotations`."""
    return (isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "data" in data[0]
            and ("annotations" in data[0] or "completions" in data[0]))


def image_names(reference: str) -> list[str]:
    """File names a task's image reference may have on disk: the base name, and without the upload prefix."""
    parsed = urlparse(reference)
    path = parse_qs(parsed.query).get("d", [parsed.path])[0]
    name = Path(unquote(path)).name
    return [name, _UPLOAD_PREFIX.sub("", name)] if _UPLOAD_PREFIX.match(name) else [name]


def read_label_studio(path: Path, image_folders: Sequence[Path] = ()) -> list[AnnotatedImage]:
    """The images of a Label Studio export with their regions in drawing order."""
    data = load_json(path, "Label Studio export")
    if not is_label_studio(data):
        raise FileProblem(path, "unreadable", "is not a Label Studio JSON export (a list of tasks)")
    folders = [path.parent, path.parent / "images", *image_folders]
    images = []
    for task in data:
        annotations = [a for a in task.get("annotations") or task.get("completions") or []
                       if not a.get("was_cancelled")]
        if not annotations:
            continue
        reference = next((v for v in (task.get("data") or {}).values() if isinstance(v, str)), "")
        image_path, looked = None, ""
        for name in image_names(reference):
            image_path, looked = find_image(name, folders)
            if image_path is not None:
                break
        objects, declared = [], None
        for number, result in enumerate(annotations[0].get("result") or []):
            kind = result.get("type")
            if kind not in _LABEL_KEYS:
                continue
            value = result.get("value") or {}
            labels = value.get(_LABEL_KEYS[kind]) or [""]
            width, height = result.get("original_width"), result.get("original_height")
            if width and height:
                declared = (int(height), int(width))
            object_id = f"result {result.get('id', number)} ({kind})"
            if kind == "polygonlabels":
                flat = [coordinate for x, y in value.get("points") or []
                        for coordinate in (x * width / 100, y * height / 100)]
                objects.append(AnnotatedObject(object_id, labels[0], "polygons", [flat]))
            elif kind == "rectanglelabels":
                x, y = value.get("x", 0) * width / 100, value.get("y", 0) * height / 100
                w, h = value.get("width", 0) * width / 100, value.get("height", 0) * height / 100
                geometry = [[x, y, x + w, y, x + w, y + h, x, y + h]] if not value.get("rotation") else []
                objects.append(AnnotatedObject(object_id, labels[0], "polygons", geometry))
            else:
                objects.append(AnnotatedObject(object_id, labels[0], "ls_brush",
                                               (value.get("rle") or [], int(height), int(width))))
        images.append(AnnotatedImage(path, f"task {task.get('id')} ({reference})", image_path, tuple(objects),
                                     declared, missing_image=looked and f"not found in {looked}"))
    return images
