"""A predicted class mask as objects: connected regions traced into polygons, their holes, their pixels and their
scores. `seglab.data.annotations.export` writes them in each tool's format.

The rules (docs/guides/annotations.md has the measurements behind them):
- regions: each connected region (8-connected) of each class but background (class 0) and the ignore index is one
  object; regions smaller than `min_area` pixels (specks) are dropped, and so are holes smaller than that (their
  pixels are the region's);
- holes are kept as objects of their own, drawn after the region around them (class 0, painted background), then
  the regions inside them. Objects come largest first, so that painting them in that order gives the mask back;
- polygons are simplified with `cv2.approxPolyDP` to `tolerance` pixels (default 0.5: no vertex of the traced
  outline is further than half a pixel from the polygon); `tolerance=0` keeps every boundary step;
- `edges=True`: polygons run along pixel edges (COCO's convention: pixel (x, y) is the square [x, x+1] x
  [y, y+1]): the outline is traced by OpenCV on the mask upscaled twice (nearest), whose boundary pixel centres lie
  a quarter pixel inside the edges, which pycocotools' grid of fifths rounds back onto them: at tolerance 0 the
  round trip is exact. `edges=False`: polygons run through the boundary pixels' centres, which PIL's
  `polygon(outline=1)`, the call labelme draws with, covers;
- score, given `confidence` (each pixel's probability of its predicted class, e.g. the top softmax probability):
  a region's score is the mean, over its own pixels (its holes excluded), of the probability of its class, which
  on those pixels is the predicted class; a hole carries the score of the region it is cut from, so that a filter
  on scores keeps or drops the two together.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from seglab.errors import ConfigError

DEFAULT_TOLERANCE = 0.5  # pixels
DEFAULT_MIN_AREA = 16  # pixels

Window = tuple[np.ndarray, int, int]  # (pixels of a window of the image, its top row, its left column)


@dataclass(frozen=True)
class Region:
    """One traced object: its class (0 for a hole, painted background), its polygon as `(N, 2)` x, y points, the
    area the polygon encloses, its score (None without a confidence map), how many holes cut into it (objects of
    their own, drawn after it) and, when asked for, its pixels (its dropped holes filled) as a `Window`."""

    class_index: int
    polygon: np.ndarray
    area: float
    score: float | None = None
    holes: int = 0
    pixels: Window | None = None


def polygon_area(points: np.ndarray) -> float:
    """The area a polygon encloses (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def _components(binary: np.ndarray, connectivity: int) -> tuple[int, np.ndarray, np.ndarray]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=connectivity)
    return count, np.asarray(labels, dtype=np.int32), stats  # int32 already: OpenCV's stubs say any matrix


def _outlines(binary: np.ndarray, tolerance: float, edges: bool) -> list[tuple[np.ndarray, int, int]]:
    # Outer outlines of the regions of `binary` as (N, 2) float x, y, each with a pixel (row, column) of its region.
    # RETR_CCOMP, not RETR_EXTERNAL: a region inside a hole of another region is an outer outline too.
    scale = 2 if edges else 1
    image = binary.astype(np.uint8)
    if edges:
        image = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(image, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    parents = np.asarray(hierarchy).reshape(-1, 4)[:, 3] if contours else np.zeros(0)  # -1: an outer outline
    outlines = []
    for contour, parent in zip(contours, parents.tolist(), strict=True):
        if parent != -1:  # the boundary of a hole
            continue
        # A contour runs through its region's pixels: its first point names the region.
        column, row = int(contour[0, 0, 0]) // scale, int(contour[0, 0, 1]) // scale
        if tolerance > 0:
            contour = cv2.approxPolyDP(contour, tolerance * scale, True)
        points = contour.reshape(-1, 2).astype(np.float64)
        if edges:
            points = (points + 0.5) / scale
        if len(points) >= 3:
            outlines.append((points, row, column))
    return outlines


def class_window(binary: np.ndarray) -> Window | None:
    """The pixels of `binary` in the smallest window holding them, or None when there are none."""
    rows, columns = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
    if not rows.size:
        return None
    top, left = int(rows[0]), int(columns[0])
    return binary[top:rows[-1] + 1, left:columns[-1] + 1], top, left


def _class_regions(binary: np.ndarray, class_index: int, *, tolerance: float, min_area: int,
                   confidence: np.ndarray | None, edges: bool, pixels: bool) -> list[Region]:
    count, labels, stats = _components(binary, 8)
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = areas >= min_area
    keep[0] = False
    kept = keep[labels]
    labels = np.where(kept, labels, 0)
    # Holes: regions not of the class (4-connected: the complement of 8-connected regions) that touch no border.
    hole_count, holes, hole_stats = _components(~kept, 4)
    enclosed = np.ones(hole_count, dtype=bool)
    enclosed[np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))] = False
    enclosed[0] = False
    # The region around each hole: the one above the hole's first pixel in raster order (that pixel's upper
    # neighbour is no hole pixel, so it belongs to a region, and lies outside the hole, so it is the one around it).
    owner = np.zeros(hole_count, dtype=np.int32)
    for hole in np.flatnonzero(enclosed).tolist():
        top = int(hole_stats[hole, cv2.CC_STAT_TOP])
        column = int(np.argmax(holes[top] == hole))
        owner[hole] = labels[top - 1, column]
    big = hole_stats[:, cv2.CC_STAT_AREA] >= min_area
    scores = None
    if confidence is not None:
        sums = np.bincount(labels.ravel(), weights=np.asarray(confidence, dtype=np.float64).ravel(),
                           minlength=count)
        scores = sums / np.maximum(areas, 1)
    hole_counts = np.bincount(owner[enclosed & big], minlength=count)
    filled = np.where(enclosed & ~big, owner, 0)  # holes too small to keep belong to the region around them
    regions = []
    for points, row, column in _outlines(kept, tolerance, edges):
        label = int(labels[row, column])
        window = None
        if pixels:
            left, top = int(stats[label, cv2.CC_STAT_LEFT]), int(stats[label, cv2.CC_STAT_TOP])
            box = np.s_[top:top + stats[label, cv2.CC_STAT_HEIGHT], left:left + stats[label, cv2.CC_STAT_WIDTH]]
            window = ((labels[box] == label) | (filled[holes[box]] == label), top, left)
        regions.append(Region(class_index, points, polygon_area(points), None if scores is None else
                              float(scores[label]), int(hole_counts[label]), window))
    for points, row, column in _outlines((enclosed & big)[holes], tolerance, edges):
        region = int(owner[holes[row, column]])
        regions.append(Region(0, points, polygon_area(points), None if scores is None else float(scores[region])))
    return regions


def trace_regions(mask: np.ndarray, *, tolerance: float = DEFAULT_TOLERANCE, min_area: int = DEFAULT_MIN_AREA,
                  ignore_index: int = 255, confidence: np.ndarray | None = None, edges: bool = True,
                  pixels: bool = False) -> list[Region]:
    """The objects of a class-index mask under this module's rules, largest first: regions and the holes cut into
    them. `edges=True` traces along pixel edges (COCO, CVAT, Label Studio), False through boundary pixel centres
    (LabelMe); `confidence` (H, W) gives each object its score; `pixels=True` gives each region its pixels."""
    if tolerance < 0 or min_area < 0:
        raise ConfigError(f"tolerance and min_area must be >= 0, got {tolerance} and {min_area}")
    mask = np.asarray(mask)
    regions = []
    for class_index in np.unique(mask).tolist():
        if class_index in (0, ignore_index):
            continue
        regions += _class_regions(mask == class_index, int(class_index), tolerance=tolerance,
                                  min_area=max(min_area, 1), confidence=confidence, edges=edges, pixels=pixels)
    regions.sort(key=lambda region: -region.area)
    return regions
