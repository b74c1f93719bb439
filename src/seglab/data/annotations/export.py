"""Predicted class masks back into annotation tools: polygons (or exact RLE) written as a whole COCO file or as
one LabelMe JSON per image, for a person to correct as pre-annotations.

The rules (the docs page, docs/guides/annotations.md, has the measurements behind them):
- regions: each connected region (8-connected) of each class but background (class 0) and the ignore index is one
  object; regions smaller than `min_area` pixels (specks) are dropped, and so are holes smaller than that;
- holes are kept as objects of their own, drawn after the region around them: a hole polygon labelled as the
  background class (COCO category 0 named after class 0, LabelMe `_background_`, which labelme2voc.py paints 0),
  then the regions inside it. Objects are written largest first, so that painting them in file order (as seglab,
  cocostuffapi and labelme2voc.py do) gives the mask back;
- polygons are simplified with `cv2.approxPolyDP` to `tolerance` pixels (default 0.5: no vertex of the traced
  outline is further than half a pixel from the polygon); `tolerance=0` keeps every boundary step;
- COCO polygons run along pixel edges (COCO's convention: pixel (x, y) is the square [x, x+1] x [y, y+1]): the
  outline is traced by OpenCV on the mask upscaled twice (nearest), whose boundary pixel centres lie a quarter
  pixel inside the edges, which pycocotools' grid of fifths rounds back onto them: at tolerance 0 the round trip
  is exact. LabelMe polygons run through the boundary pixels' centres, which PIL's `polygon(outline=1)`, the call
  labelme draws with, covers;
- `mode="rle"` (COCO only) writes one object per class and image as pycocotools' compressed RLE: exact;
- each object carries its class name and, given a confidence map, a score: the mean confidence of its pixels
  (COCO `score`, LabelMe `description: "score 0.87"`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from seglab.atomic import write_text_atomically
from seglab.data.files import natural_key
from seglab.errors import ConfigError

DEFAULT_TOLERANCE = 0.5  # pixels
DEFAULT_MIN_AREA = 16  # pixels
EXPORT_MODES = ("polygons", "rle")
LABELME_BACKGROUND = "_background_"
LABELME_VERSION = "5.4.1"


@dataclass(frozen=True)
class Region:
    """One traced object: its class (0 for a hole, painted background), its polygon as `(N, 2)` x, y points,
    its filled area in pixels and its score (None without a confidence map)."""

    class_index: int
    polygon: np.ndarray
    area: float
    score: float | None = None


def _drop_specks(binary: np.ndarray, min_area: int, connectivity: int) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=connectivity)
    labels = np.asarray(labels, dtype=np.int32)  # int32 already: OpenCV's stubs type it as any matrix
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def _holes(binary: np.ndarray, min_area: int) -> np.ndarray:
    # Regions not of the class, enclosed by it (4-connected: the complement of 8-connected regions), not specks.
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~binary).astype(np.uint8), connectivity=4)
    labels = np.asarray(labels, dtype=np.int32)  # int32 already: OpenCV's stubs type it as any matrix
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    keep[border] = False
    keep[0] = False
    return keep[labels]


def _outlines(binary: np.ndarray, tolerance: float, edges: bool) -> list[np.ndarray]:
    # Outer outlines of the regions of `binary` as (N, 2) float x, y: along pixel edges (COCO) or through the
    # boundary pixels' centres (LabelMe).
    scale = 2 if edges else 1
    image = binary.astype(np.uint8)
    if edges:
        image = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(image, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    for contour in contours:
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance * scale, True)
        points = contour.reshape(-1, 2).astype(np.float64)
        if edges:
            points = (points + 0.5) / scale
        if len(points) >= 3:
            outlines.append(points)
    return outlines


def polygon_area(points: np.ndarray) -> float:
    """The area a polygon encloses (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def trace_regions(mask: np.ndarray, *, tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA,
                  ignore_index: int = 255, confidence: np.ndarray | None = None, edges: bool = True
                  ) -> list[Region]:
    """The objects of a class-index mask under this module's rules, largest first; `edges=True` traces along pixel
    edges (COCO), False through boundary pixel centres (LabelMe)."""
    if tolerance < 0 or min_area < 0:
        raise ConfigError(f"tolerance and min_area must be >= 0, got {tolerance} and {min_area}")
    mask = np.asarray(mask)
    regions = []
    for class_index in np.unique(mask).tolist():
        if class_index in (0, ignore_index):
            continue
        binary = _drop_specks(mask == class_index, max(min_area, 1), 8)
        for outline in _outlines(binary, tolerance, edges):
            regions.append(Region(int(class_index), outline, polygon_area(outline)))
        for outline in _outlines(_holes(binary, max(min_area, 1)), tolerance, edges):
            regions.append(Region(0, outline, polygon_area(outline)))
    regions.sort(key=lambda region: -region.area)
    if confidence is None:
        return regions
    return [Region(r.class_index, r.polygon, r.area, _score(r, confidence, edges)) if r.class_index else r
            for r in regions]


def _score(region: Region, confidence: np.ndarray, edges: bool) -> float:
    height, width = confidence.shape
    points = region.polygon if edges else region.polygon + 0.5
    rle = coco_mask.frPyObjects([points.ravel().tolist()], height, width)
    covered = coco_mask.decode(coco_mask.merge(rle)).astype(bool)
    return float(confidence[covered].mean()) if covered.any() else 0.0


@dataclass(frozen=True)
class Prediction:
    """One predicted image: its file name as the tool should find it, its class mask (H, W) and optionally the
    confidence of each pixel's class (H, W, e.g. the top softmax probability)."""

    file_name: str
    mask: np.ndarray
    confidence: np.ndarray | None = None


def coco_document(predictions: Sequence[Prediction], class_names: Sequence[str], *, mode: str = "polygons",
                  tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA, ignore_index: int = 255
                  ) -> dict:
    """A whole COCO file (images, categories, annotations) of `predictions`: category id = class index, class 0
    (background) listed only where polygons need it for holes."""
    if mode not in EXPORT_MODES:
        raise ConfigError(f"export mode {mode!r}: choose one of {', '.join(EXPORT_MODES)}")
    images, annotations, holes = [], [], False
    for image_id, prediction in enumerate(predictions, start=1):
        mask = np.asarray(prediction.mask)
        height, width = mask.shape
        images.append({"id": image_id, "file_name": prediction.file_name, "width": width, "height": height})
        if mode == "rle":
            for class_index in np.unique(mask).tolist():
                if class_index in (0, ignore_index):
                    continue
                binary = np.asfortranarray((mask == class_index).astype(np.uint8))
                rle = coco_mask.encode(binary)
                counts = rle["counts"]  # bytes, which pycocotools' stubs type as str
                text = counts.decode("ascii") if isinstance(counts, bytes) else counts
                entry = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(class_index),
                         "segmentation": {"size": [height, width], "counts": text},
                         "area": float(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                         "iscrowd": 0}
                if prediction.confidence is not None:
                    entry["score"] = float(np.asarray(prediction.confidence)[binary.astype(bool)].mean())
                annotations.append(entry)
            continue
        for region in trace_regions(mask, tolerance=tolerance, min_area=min_area, ignore_index=ignore_index,
                                    confidence=prediction.confidence, edges=True):
            holes |= region.class_index == 0
            xs, ys = region.polygon[:, 0], region.polygon[:, 1]
            entry = {"id": len(annotations) + 1, "image_id": image_id, "category_id": region.class_index,
                     "segmentation": [np.round(region.polygon, 3).ravel().tolist()], "area": region.area,
                     "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())],
                     "iscrowd": 0}
            if region.score is not None:
                entry["score"] = round(region.score, 4)
            annotations.append(entry)
    first = 0 if holes else 1
    categories = [{"id": index, "name": name, "supercategory": ""}
                  for index, name in enumerate(class_names) if index >= first]
    return {"info": {"description": "seglab predictions"}, "images": images, "categories": categories,
            "annotations": annotations}


def labelme_document(prediction: Prediction, class_names: Sequence[str], *, image_path: str,
                     tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA,
                     ignore_index: int = 255) -> dict:
    """One LabelMe JSON of a prediction; `image_path` is the image relative to where the JSON will be written."""
    mask = np.asarray(prediction.mask)
    shapes = []
    for region in trace_regions(mask, tolerance=tolerance, min_area=min_area, ignore_index=ignore_index,
                                confidence=prediction.confidence, edges=False):
        label = LABELME_BACKGROUND if region.class_index == 0 else class_names[region.class_index]
        shapes.append({"label": label, "points": np.round(region.polygon, 3).tolist(), "group_id": None,
                       "description": "" if region.score is None else f"score {region.score:.3f}",
                       "shape_type": "polygon", "flags": {}, "mask": None})
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
            "imageHeight": int(mask.shape[0]), "imageWidth": int(mask.shape[1])}


def write_coco(path: Path | str, predictions: Sequence[Prediction], class_names: Sequence[str], **options) -> Path:
    """`coco_document` written (atomically) to `path`."""
    document = coco_document(predictions, class_names, **options)
    return write_text_atomically(path, json.dumps(document), what="COCO predictions ")


def write_labelme(path: Path | str, prediction: Prediction, class_names: Sequence[str], *, image: Path | str,
                  **options) -> Path:
    """`labelme_document` written (atomically) to `path`, naming `image` relative to the JSON's folder."""
    import os

    path = Path(path)
    relative = os.path.relpath(Path(image).resolve(), path.parent.resolve())
    document = labelme_document(prediction, class_names, image_path=Path(relative).as_posix(), **options)
    return write_text_atomically(path, json.dumps(document, indent=2), what="LabelMe file ")


PREDICTION_FORMATS = ("coco", "labelme")
COCO_PREDICTIONS_FILE = "predictions.coco.json"


class AnnotationWriter:
    """Predictions written as annotations while they are made: a `seglab.inference.files.predict_files`
    `on_written` callback, `(input path, image, labels (H, W))`. LabelMe: `out/<name>.json` per image (`names`
    maps an input path to its output name under `out`, as predict mirrors sub-folders; default its stem), naming
    the input image relative to the JSON. COCO: every image's objects gathered, then written whole to
    `out/predictions.coco.json` by `close()`, with `file_name` the input's base name (what CVAT and Label Studio
    match on import). Options as for `coco_document`. `then` (another `on_written` callback, e.g. predict's mask
    scorer) is called after each image. Safe to call from several threads (predict writes from a pool)."""

    def __init__(self, format_name: str, out: Path | str, class_names: Sequence[str], *,
                 names: dict[Path, Path] | None = None, mode: str = "polygons",
                 tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA, ignore_index: int = 255,
                 then: Callable[..., None] | None = None) -> None:
        if format_name not in PREDICTION_FORMATS:
            raise ConfigError(f"prediction format {format_name!r}: choose one of {', '.join(PREDICTION_FORMATS)}")
        if mode == "rle" and format_name != "coco":
            raise ConfigError("exact RLE is a COCO option; LabelMe files hold polygons")
        self.format, self.out, self.class_names = format_name, Path(out), tuple(class_names)
        self.names = names or {}
        self.options = {"tolerance": tolerance, "min_area": min_area, "ignore_index": ignore_index}
        self.mode = mode
        self.document: dict = {"images": [], "annotations": [], "categories": []}
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
        single = coco_document([prediction], self.class_names, mode=self.mode, **self.options)
        with self._lock:
            self._merge(single)

    def _merge(self, single: dict) -> None:
        image_id = len(self.document["images"]) + 1
        self.document["images"].append({**single["images"][0], "id": image_id})
        for annotation in single["annotations"]:
            self.document["annotations"].append({**annotation, "id": len(self.document["annotations"]) + 1,
                                                 "image_id": image_id})
        if len(single["categories"]) > len(self.document["categories"]):
            self.document["categories"] = single["categories"]

    def close(self) -> list[Path]:
        """Write the COCO file (nothing more to do for LabelMe); the files written."""
        if self.format == "coco":
            if not self.document["categories"]:
                self.document["categories"] = [{"id": i, "name": n, "supercategory": ""}
                                               for i, n in enumerate(self.class_names) if i]
            # Threads finish in any order: images listed by name (their ids stay as given).
            self.document["images"].sort(key=lambda image: natural_key(image["file_name"]))
            document = {"info": {"description": "seglab predictions"}, **self.document}
            path = self.out / COCO_PREDICTIONS_FILE
            self.written.append(write_text_atomically(path, json.dumps(document), what="COCO predictions "))
        return self.written
