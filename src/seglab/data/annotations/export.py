"""Predicted class masks back into annotation tools, for a person to correct as pre-annotations: a whole COCO file,
one LabelMe JSON per image, one CVAT for images 1.1 XML, or one Label Studio tasks JSON with predictions.

The objects are those of `seglab.data.annotations.tracing` (regions, holes, specks, tolerance and the score: the
mean probability of the object's class over its pixels). Each carries its class name and, given a confidence map,
its score. Per format:
- COCO: polygons along pixel edges; a hole is an object of category 0 (named after class 0). `mode="rle"`: one
  object per class and image as pycocotools' compressed RLE (exact). The score is each annotation's `score`, the
  field of COCO results;
- LabelMe: polygons through pixel centres; a hole is a `_background_` shape (labelme2voc.py paints it 0). The
  score is the shape's `score` key (labelme keeps keys it does not know as the shape's `other_data` and writes them
  back on save) and its `description`, `score 0.8734`, which labelme's shape dialog shows (`flags` holds only
  booleans, ticked in a list);
- CVAT: `<polygon>` along pixel edges; a region with holes (a CVAT polygon has none) is a `<mask>` of its pixels in
  CVAT's RLE, as is every object with `mode="rle"` (one per class and image, exact). `z_order` is the drawing
  order. The score is an `<attribute name="score">`, which CVAT keeps only where the task's label declares a
  number attribute `score` (its importer drops attributes its labels do not declare);
- Label Studio: `polygonlabels` in percent of the image's size; a hole is a polygon labelled with class 0's name.
  `mode="rle"`: one `brushlabels` region per class and image in Label Studio's RLE (exact). The score is each
  result's `score`; the prediction's `score` (what Label Studio sorts tasks by) is the mean probability of the
  predicted class over all the image's pixels.
"""

from __future__ import annotations

import json
import os
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from seglab.atomic import write_text_atomically
from seglab.data.annotations.raster import encode_cvat_rle, encode_label_studio_rle
from seglab.data.annotations.tracing import (
    DEFAULT_MIN_AREA,
    DEFAULT_TOLERANCE,
    Region,
    class_window,
    trace_regions,
)
from seglab.data.files import natural_key
from seglab.errors import ConfigError

EXPORT_MODES = ("polygons", "rle")
PREDICTION_FORMATS = ("coco", "labelme", "cvat", "labelstudio")
RLE_FORMATS = ("coco", "cvat", "labelstudio")
LABELME_BACKGROUND = "_background_"
LABELME_VERSION = "5.4.1"
# The files written whole, in the output folder.
PREDICTION_FILES = {"coco": "predictions.coco.json", "cvat": "annotations.xml",
                    "labelstudio": "predictions.labelstudio.json"}
COCO_PREDICTIONS_FILE = PREDICTION_FILES["coco"]
# Label Studio's own templates name their tags so: "Semantic Segmentation with Polygons" / "... with Masks".
LABEL_STUDIO_NAMES = {"polygonlabels": "label", "brushlabels": "tag", "image": "image"}
SCORE_DECIMALS = 4


@dataclass(frozen=True)
class Prediction:
    """One predicted image: its file name as the tool should find it, its class mask (H, W) and optionally each
    pixel's probability of its predicted class (H, W, the top softmax probability)."""

    file_name: str
    mask: np.ndarray
    confidence: np.ndarray | None = None


def _score(value: float | None) -> float | None:
    return None if value is None else round(float(value), SCORE_DECIMALS)


def class_objects(prediction: Prediction, ignore_index: int = 255) -> list[Region]:
    """`mode="rle"`'s objects: one per class present (background and ignore left out), its pixels exact, its
    score the mean confidence of those pixels."""
    mask = np.asarray(prediction.mask)
    objects = []
    for class_index in np.unique(mask).tolist():
        if class_index in (0, ignore_index):
            continue
        binary = mask == class_index
        score = None if prediction.confidence is None else float(np.asarray(prediction.confidence)[binary].mean())
        objects.append(Region(int(class_index), np.zeros((0, 2)), float(binary.sum()), score,
                              pixels=class_window(binary)))
    return objects


def _objects(prediction: Prediction, mode: str, options: dict, *, edges: bool = True, pixels: bool = False
             ) -> list[Region]:
    if mode not in EXPORT_MODES:
        raise ConfigError(f"export mode {mode!r}: choose one of {', '.join(EXPORT_MODES)}")
    if mode == "rle":
        return class_objects(prediction, options.get("ignore_index", 255))
    return trace_regions(prediction.mask, confidence=prediction.confidence, edges=edges, pixels=pixels, **options)


def _options(tolerance: float, min_area: int, ignore_index: int) -> dict:
    return {"tolerance": tolerance, "min_area": min_area, "ignore_index": ignore_index}


# COCO

def _coco_image(prediction: Prediction, mode: str, options: dict) -> dict:
    # One image's entry and annotations; ids are given when the file is put together.
    height, width = np.asarray(prediction.mask).shape
    annotations = []
    for region in _objects(prediction, mode, options):
        if mode == "rle":
            assert region.pixels is not None  # class_objects gives every object its pixels
            window, top, left = region.pixels
            binary = np.zeros((height, width), dtype=np.uint8, order="F")
            binary[top:top + window.shape[0], left:left + window.shape[1]] = window
            rle = coco_mask.encode(binary)
            counts = rle["counts"]  # bytes, which pycocotools' stubs type as str
            segmentation: Any = {"size": [height, width],
                                 "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
            area, bbox = float(coco_mask.area(rle)), [float(v) for v in coco_mask.toBbox(rle)]
        else:
            xs, ys = region.polygon[:, 0], region.polygon[:, 1]
            segmentation, area = [np.round(region.polygon, 3).ravel().tolist()], region.area
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]
        entry = {"category_id": region.class_index, "segmentation": segmentation, "area": area, "bbox": bbox,
                 "iscrowd": 0}
        if region.score is not None:
            entry["score"] = _score(region.score)
        annotations.append(entry)
    return {"image": {"file_name": prediction.file_name, "width": width, "height": height},
            "annotations": annotations}


def _coco_file(images: Sequence[dict], class_names: Sequence[str]) -> dict:
    # Category id = class index; class 0 (background) listed only where a hole needs it.
    entries, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        entries.append({"id": image_id, **image["image"]})
        annotations += [{"id": len(annotations) + number, "image_id": image_id, **annotation}
                        for number, annotation in enumerate(image["annotations"], start=1)]
    first = 0 if any(a["category_id"] == 0 for a in annotations) else 1
    categories = [{"id": index, "name": name, "supercategory": ""}
                  for index, name in enumerate(class_names) if index >= first]
    return {"info": {"description": "seglab predictions"}, "images": entries, "categories": categories,
            "annotations": annotations}


def coco_document(predictions: Sequence[Prediction], class_names: Sequence[str], *, mode: str = "polygons",
                  tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA, ignore_index: int = 255
                  ) -> dict:
    """A whole COCO file (info, images, categories, annotations) of `predictions`."""
    options = _options(tolerance, min_area, ignore_index)
    return _coco_file([_coco_image(p, mode, options) for p in predictions], class_names)


# LabelMe

def labelme_document(prediction: Prediction, class_names: Sequence[str], *, image_path: str,
                     tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA,
                     ignore_index: int = 255) -> dict:
    """One LabelMe JSON of a prediction; `image_path` is the image relative to where the JSON will be written."""
    mask = np.asarray(prediction.mask)
    shapes = []
    for region in _objects(prediction, "polygons", _options(tolerance, min_area, ignore_index), edges=False):
        label = LABELME_BACKGROUND if region.class_index == 0 else class_names[region.class_index]
        shape = {"label": label, "points": np.round(region.polygon, 3).tolist(), "group_id": None,
                 "description": "", "shape_type": "polygon", "flags": {}, "mask": None}
        if region.score is not None:
            shape.update(description=f"score {_score(region.score)}", score=_score(region.score))
        shapes.append(shape)
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
            "imageHeight": int(mask.shape[0]), "imageWidth": int(mask.shape[1])}


# CVAT for images 1.1

def _cvat_image(prediction: Prediction, class_names: Sequence[str], mode: str, options: dict) -> dict:
    # One image's shapes as (tag, attributes, score), in drawing order.
    height, width = np.asarray(prediction.mask).shape
    shapes = []
    for z_order, region in enumerate(_objects(prediction, mode, options, pixels=True)):
        if region.class_index == 0:
            continue  # a hole: the region around it is written as a mask
        attributes = {"label": class_names[region.class_index], "source": "auto", "occluded": "0"}
        if region.holes or mode == "rle":
            assert region.pixels is not None  # asked for (pixels=True)
            window, top, left = region.pixels
            attributes.update(rle=", ".join(str(run) for run in encode_cvat_rle(window)), left=str(left),
                              top=str(top), width=str(window.shape[1]), height=str(window.shape[0]))
            tag = "mask"
        else:
            attributes["points"] = ";".join(f"{x:.2f},{y:.2f}" for x, y in region.polygon)
            tag = "polygon"
        attributes["z_order"] = str(z_order)
        shapes.append((tag, attributes, _score(region.score)))
    return {"name": prediction.file_name, "width": width, "height": height, "shapes": shapes}


def _cvat_file(images: Sequence[dict], class_names: Sequence[str]) -> str:
    root = ElementTree.Element("annotations")
    ElementTree.SubElement(root, "version").text = "1.1"
    task = ElementTree.SubElement(ElementTree.SubElement(root, "meta"), "task")
    ElementTree.SubElement(task, "name").text = "seglab predictions"
    ElementTree.SubElement(task, "size").text = str(len(images))
    labels = ElementTree.SubElement(task, "labels")
    for name in class_names[1:]:
        label = ElementTree.SubElement(labels, "label")
        ElementTree.SubElement(label, "name").text = name
        ElementTree.SubElement(label, "type").text = "any"
        spec = ElementTree.SubElement(ElementTree.SubElement(label, "attributes"), "attribute")
        for key, value in (("name", "score"), ("mutable", "False"), ("input_type", "number"),
                           ("default_value", "0"), ("values", "0\n1\n0.0001")):
            ElementTree.SubElement(spec, key).text = value
    for image_id, image in enumerate(images):
        element = ElementTree.SubElement(root, "image", id=str(image_id), name=image["name"],
                                         width=str(image["width"]), height=str(image["height"]))
        for tag, attributes, score in image["shapes"]:
            shape = ElementTree.SubElement(element, tag, attributes)
            if score is not None:
                ElementTree.SubElement(shape, "attribute", name="score").text = str(score)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def cvat_document(predictions: Sequence[Prediction], class_names: Sequence[str], *, mode: str = "polygons",
                  tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA, ignore_index: int = 255
                  ) -> str:
    """A CVAT for images 1.1 XML (its text) of `predictions`: `<meta>` declares the classes but class 0 as labels,
    each with its `score` attribute."""
    options = _options(tolerance, min_area, ignore_index)
    return _cvat_file([_cvat_image(p, class_names, mode, options) for p in predictions], class_names)


# Label Studio

def labelstudio_task(prediction: Prediction, class_names: Sequence[str], *, mode: str = "polygons",
                     tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA, ignore_index: int = 255,
                     model_version: str = "seglab", image_prefix: str = "") -> dict:
    """One Label Studio task with the prediction as its pre-annotation: `data.image` is `image_prefix` + the file
    name (e.g. `/data/local-files/?d=photos/` for Label Studio's local files)."""
    height, width = np.asarray(prediction.mask).shape
    results = []
    for number, region in enumerate(_objects(prediction, mode, _options(tolerance, min_area, ignore_index))):
        kind = "brushlabels" if mode == "rle" else "polygonlabels"
        if mode == "rle":
            assert region.pixels is not None  # class_objects gives every object its pixels
            window, top, left = region.pixels
            alpha = np.zeros((height, width), dtype=np.uint8)
            alpha[top:top + window.shape[0], left:left + window.shape[1]][window] = 255
            # RGBA, every channel 255 where covered, as label-studio-converter's mask2rle writes it.
            value: dict = {"format": "rle", "rle": encode_label_studio_rle(np.repeat(alpha.ravel(), 4))}
        else:
            percent = region.polygon / np.array([width, height]) * 100
            value = {"points": np.round(percent, 6).tolist(), "closed": True}
        value[kind] = [class_names[region.class_index]]
        result = {"id": f"seglab{number}", "type": kind, "from_name": LABEL_STUDIO_NAMES[kind],
                  "to_name": LABEL_STUDIO_NAMES["image"], "original_width": width, "original_height": height,
                  "image_rotation": 0, "value": value}
        if region.score is not None:
            result["score"] = _score(region.score)
        results.append(result)
    entry: dict = {"model_version": model_version, "result": results}
    if prediction.confidence is not None:
        entry["score"] = _score(np.asarray(prediction.confidence, dtype=np.float64).mean())
    return {"data": {LABEL_STUDIO_NAMES["image"]: image_prefix + prediction.file_name}, "predictions": [entry]}


# Files

def write_coco(path: Path | str, predictions: Sequence[Prediction], class_names: Sequence[str], **options) -> Path:
    """`coco_document` written (atomically) to `path`."""
    document = coco_document(predictions, class_names, **options)
    return write_text_atomically(path, json.dumps(document), what="COCO predictions ")


def write_labelme(path: Path | str, prediction: Prediction, class_names: Sequence[str], *, image: Path | str,
                  **options) -> Path:
    """`labelme_document` written (atomically) to `path`, naming `image` relative to the JSON's folder."""
    path = Path(path)
    relative = os.path.relpath(Path(image).resolve(), path.parent.resolve())
    document = labelme_document(prediction, class_names, image_path=Path(relative).as_posix(), **options)
    return write_text_atomically(path, json.dumps(document, indent=2), what="LabelMe file ")


def write_cvat(path: Path | str, predictions: Sequence[Prediction], class_names: Sequence[str], **options) -> Path:
    """`cvat_document` written (atomically) to `path`."""
    return write_text_atomically(path, cvat_document(predictions, class_names, **options), what="CVAT XML ")


def write_labelstudio(path: Path | str, predictions: Sequence[Prediction], class_names: Sequence[str],
                      **options) -> Path:
    """A Label Studio tasks JSON (a list of `labelstudio_task`s) written (atomically) to `path`."""
    tasks = [labelstudio_task(p, class_names, **options) for p in predictions]
    return write_text_atomically(path, json.dumps(tasks), what="Label Studio tasks ")


class AnnotationWriter:
    """Predictions written as annotations while they are made: a `seglab.inference.files.predict_files`
    `on_written` callback, `(input path, image, labels (H, W)[, confidence (H, W)])`; with a confidence map the
    objects carry scores. LabelMe: `out/<name>.json` per image (`names` maps an input path to its output name
    under `out`, as predict mirrors sub-folders; default its stem), naming the input image relative to the JSON.
    COCO, CVAT and Label Studio: every image's objects gathered, then written whole by `close()` to
    `out/PREDICTION_FILES[format]`, images in name order, each named by the input's base name (what the tools
    match on import). Options as for `coco_document` (`mode="rle"`: COCO, CVAT, Label Studio) and, for Label
    Studio, `labelstudio_task`. `then` (another `on_written` callback, e.g. predict's mask scorer) is called after
    each image with the first three arguments. Safe to call from several threads (predict writes from a pool)."""

    def __init__(self, format_name: str, out: Path | str, class_names: Sequence[str], *,
                 names: dict[Path, Path] | None = None, mode: str = "polygons",
                 tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA, ignore_index: int = 255,
                 model_version: str = "seglab", image_prefix: str = "",
                 then: Callable[..., None] | None = None) -> None:
        if format_name not in PREDICTION_FORMATS:
            raise ConfigError(f"prediction format {format_name!r}: choose one of {', '.join(PREDICTION_FORMATS)}")
        if mode not in EXPORT_MODES:
            raise ConfigError(f"export mode {mode!r}: choose one of {', '.join(EXPORT_MODES)}")
        if mode == "rle" and format_name not in RLE_FORMATS:
            raise ConfigError(f"exact RLE is written for {', '.join(RLE_FORMATS)}; LabelMe files hold polygons")
        self.format, self.out, self.class_names = format_name, Path(out), tuple(class_names)
        self.names = names or {}
        self.mode, self.options = mode, _options(tolerance, min_area, ignore_index)
        self.model_version, self.image_prefix = model_version, image_prefix
        self.images: list[Any] = []  # each image's part of the file written by close()
        self.written: list[Path] = []
        self.then = then
        self._lock = threading.Lock()

    def __call__(self, path: Path, image: object, labels: np.ndarray, confidence: np.ndarray | None = None) -> None:
        self._add(Path(path), labels, confidence)
        if self.then is not None:
            self.then(path, image, labels)

    def _add(self, path: Path, labels: np.ndarray, confidence: np.ndarray | None) -> None:
        prediction = Prediction(path.name, np.asarray(labels), confidence)
        if self.format == "labelme":
            name = self.names.get(path, Path(path.stem))
            written = write_labelme(self.out / name.with_suffix(".json"), prediction, self.class_names, image=path,
                                    **self.options)
            with self._lock:
                self.written.append(written)
            return
        if self.format == "coco":
            part: Any = _coco_image(prediction, self.mode, self.options)
        elif self.format == "cvat":
            part = _cvat_image(prediction, self.class_names, self.mode, self.options)
        else:
            part = labelstudio_task(prediction, self.class_names, mode=self.mode, **self.options,
                                    model_version=self.model_version, image_prefix=self.image_prefix)
        with self._lock:
            self.images.append((prediction.file_name, part))

    def close(self) -> list[Path]:
        """Write the file of COCO, CVAT or Label Studio (nothing more to do for LabelMe); the files written."""
        if self.format == "labelme":
            return self.written
        # Threads finish in any order: images in name order.
        parts = [part for _, part in sorted(self.images, key=lambda item: natural_key(item[0]))]
        if self.format == "coco":
            text, what = json.dumps(_coco_file(parts, self.class_names)), "COCO predictions "
        elif self.format == "cvat":
            text, what = _cvat_file(parts, self.class_names), "CVAT XML "
        else:
            text, what = json.dumps(parts), "Label Studio tasks "
        path = self.out / PREDICTION_FILES[self.format]
        self.written.append(write_text_atomically(path, text, what=what))
        return self.written
