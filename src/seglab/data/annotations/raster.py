"""Turning one object's shape into the pixels it covers (a boolean `(height, width)` array): one function per
shape kind, each following the drawing code of the tool that made the shape.

- `polygons` (COCO, CVAT, Label Studio polygons; CVAT boxes as their 4 corners): pycocotools `frPyObjects` +
  `merge` + `decode`, the rasteriser of the COCO API itself (and of datumaro, which CVAT's mask export uses);
  several polygons of one object are merged (their union). A polygon with fewer than 3 points covers nothing
  (`seglab data check` names it).
- `rle` (COCO `segmentation` as RLE, compressed or not): pycocotools decodes it exactly; holes are whatever the
  RLE holds.
- `labelme` (every LabelMe shape type): labelme's own `shape_to_mask` (see `labelme_shape_mask`).
- `cvat_mask` (CVAT for images 1.1 `<mask>`): CVAT's run lengths over the mask's box, row by row, starting with
  a run of 0s, placed at `left`, `top`.
- `ls_brush` (Label Studio `brushlabels`): Label Studio's own RLE of an RGBA image (`decode_label_studio_rle`);
  a pixel is covered where its alpha is at least 128 (the brush paints opaque, its anti-aliased rim half).
- `line` (CVAT polylines): PIL `ImageDraw.line` `LINE_WIDTH` pixels wide, labelme's width for its line shapes.
- `ellipse` (CVAT ellipses): PIL `ImageDraw.ellipse` filled, as labelme draws circles.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from seglab.data.annotations.model import AnnotatedObject

# labelme's `shape_to_mask` defaults (labelme/utils/shape.py): lines 10 px wide, points drawn with radius 5.
LINE_WIDTH = 10
POINT_RADIUS = 5
# A Label Studio brush pixel belongs to the region where its alpha is at least this.
BRUSH_ALPHA = 128


Window = tuple[np.ndarray, int, int]  # (covered pixels of a window of the image, its top row, its left column)


def rasterise_object(obj: AnnotatedObject, height: int, width: int) -> np.ndarray | None:
    """The pixels `obj` covers in a `height` x `width` image, or None when its shape covers nothing drawable."""
    found = rasterise_window(obj, height, width)
    if found is None or found[0].shape == (height, width):
        return None if found is None else found[0]
    window, top, left = found
    mask = np.zeros((height, width), dtype=bool)
    mask[top:top + window.shape[0], left:left + window.shape[1]] = window
    return mask


def rasterise_window(obj: AnnotatedObject, height: int, width: int) -> Window | None:
    """`rasterise_object` as a window of the image around the object (painting a small object then touches only
    its window, not the whole image)."""
    found = RASTERISERS[obj.kind](obj.geometry, height, width)
    return found if found is None or isinstance(found, tuple) else (found, 0, 0)


def polygons_mask(polygons: list[list[float]], height: int, width: int) -> Window | None:
    """Union of COCO-style polygons (flat `[x1, y1, x2, y2, ...]` lists in pixel coordinates), drawn by pycocotools,
    in the window of the image that holds them."""
    # pycocotools reads a 4-number list as a box, so a 2-point "polygon" must never reach it.
    usable = [np.asarray(polygon, dtype=float) for polygon in polygons if len(polygon) >= 6 and len(polygon) % 2 == 0]
    if not usable:
        return None
    # pycocotools (maskApi.c, rleFrPoly) first rounds each coordinate to the grid 5 times finer, as (int)(5 * x +
    # .5); everything after works on those integers and is unchanged by a shift of whole pixels. The polygons are
    # drawn in their window (1 pixel of margin) with coordinates rounded that way first, so the pixels are
    # exactly those of drawing in the whole image, at a fraction of the cost for small objects.
    xs = np.concatenate([p[0::2] for p in usable])
    ys = np.concatenate([p[1::2] for p in usable])
    left, top = max(0, int(np.floor(xs.min())) - 1), max(0, int(np.floor(ys.min())) - 1)
    right, bottom = min(width, int(np.ceil(xs.max())) + 2), min(height, int(np.ceil(ys.max())) + 2)
    if right <= left or bottom <= top:
        return None
    shifted = []
    for polygon in usable:
        moved = polygon.copy()
        for offset, values in ((left, moved[0::2]), (top, moved[1::2])):
            if offset:  # an offset of 0 keeps the coordinates as given (negative ones included)
                values[:] = (np.trunc(5.0 * values + 0.5) - 5 * offset) / 5.0
        shifted.append(moved.tolist())
    rles = coco_mask.frPyObjects(shifted, bottom - top, right - left)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool), top, left


def rle_mask(rle: dict, height: int, width: int) -> np.ndarray | None:
    """A COCO RLE (`counts` a list: uncompressed; a string: compressed) decoded by pycocotools."""
    rle_height, rle_width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    # pycocotools takes these RLE dicts at run time; its stubs type only its own encoded RLE.
    if isinstance(counts, list):
        encoded = coco_mask.frPyObjects(rle, rle_height, rle_width)  # pyright: ignore[reportArgumentType, reportCallIssue]
    else:
        encoded = {"size": [rle_height, rle_width], "counts": counts.encode() if isinstance(counts, str) else counts}
    mask = coco_mask.decode(encoded).astype(bool)  # pyright: ignore[reportArgumentType]
    return _fit(mask, height, width)


def labelme_shape_mask(shape: tuple[str | None, list, np.ndarray | None], height: int, width: int) -> np.ndarray:
    """labelme's `shape_to_mask` (wkentaro/labelme, labelme/utils/shape.py, and `shapes_to_label` for "mask"
    shapes): the same PIL ImageDraw calls with the same arguments, so that the class masks equal
    `examples/semantic_segmentation/labelme2voc.py`'s.

    circle: centre and a rim point, `ellipse` with radius their distance; rectangle: two corners, `rectangle`;
    line / linestrip: `line` 10 px wide; point: `ellipse` of radius 5; mask: the shape's own bitmap placed at its
    first point; anything else (polygon): `polygon` (needs 3 points)."""
    shape_type, points, bitmap = shape
    if shape_type == "mask":
        assert bitmap is not None  # a mask shape carries its bitmap
        mask = np.zeros((height, width), dtype=bool)
        (x1, y1), _ = np.asarray(points).astype(int)
        part = bitmap[: max(0, height - y1), : max(0, width - x1)]
        mask[y1:y1 + part.shape[0], x1:x1 + part.shape[1]] = part
        return mask
    canvas = Image.fromarray(np.zeros((height, width), dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    xy = [tuple(point) for point in points]
    if shape_type == "circle":
        (cx, cy), (px, py) = xy
        d = np.sqrt((cx - px) ** 2 + (cy - py) ** 2)
        draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
    elif shape_type == "rectangle":
        draw.rectangle(xy, outline=1, fill=1)
    elif shape_type in ("line", "linestrip"):
        draw.line(xy=xy, fill=1, width=LINE_WIDTH)
    elif shape_type == "point":
        cx, cy = xy[0]
        draw.ellipse([cx - POINT_RADIUS, cy - POINT_RADIUS, cx + POINT_RADIUS, cy + POINT_RADIUS], outline=1, fill=1)
    else:
        draw.polygon(xy=xy, outline=1, fill=1)
    return np.array(canvas, dtype=bool)


def labelme_bitmap(data: str) -> np.ndarray:
    """A LabelMe "mask" shape's base64 PNG as a boolean array (labelme's `img_b64_to_arr`, then `astype(bool)`)."""
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        return np.array(image).astype(bool)


def cvat_mask(geometry: tuple[list[int], int, int, int, int], height: int, width: int) -> np.ndarray:
    """CVAT's `<mask rle="..." left top width height>`: run lengths over the mask's box, row by row, the first run
    of 0s (cvat/apps/dataset_manager/formats/cvat.py reads it this way)."""
    counts, left, top, box_width, box_height = geometry
    values = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
    flat = np.zeros(box_width * box_height, dtype=bool)
    flat[: min(values.size, flat.size)] = values[: flat.size]
    mask = np.zeros((height, width), dtype=bool)
    part = flat.reshape(box_height, box_width)[: max(0, height - top), : max(0, width - left)]
    mask[top:top + part.shape[0], left:left + part.shape[1]] = part
    return mask


def encode_cvat_rle(window: np.ndarray) -> list[int]:
    """A mask's box (2-D, True where covered) as CVAT's run lengths: row by row, alternating runs, the first of 0s
    (0 long when the first pixel is covered), as CVAT's `mask2Rle` writes them; `cvat_mask` decodes them."""
    flat = np.asarray(window, dtype=bool).ravel()
    if not flat.size:
        return []
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def decode_label_studio_rle(rle: list[int]) -> np.ndarray:
    """Label Studio's brush RLE -> the flat uint8 values it encodes (RGBA, row-major).

    Re-implements `decode_rle` of label-studio-converter (label_studio_converter/brush.py), itself a port of
    thi.ng's rle-pack: a bit stream holding the value count (32 bits), the word size (5 bits, +1), four run-length
    field sizes (4 bits each, +1), then records: a repeat flag (1 bit), a size selector (2 bits), the run length
    minus 1 (in the selected size), and either one word repeated or that many words. No maintained PyPI package
    decodes this format apart from the converter itself, which would pull in Label Studio's dependencies."""
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    position = 0

    def read(size: int) -> int:
        nonlocal position
        chunk = bits[position:position + size]
        position += size
        if chunk.size < size:
            raise ValueError("the Label Studio RLE ends early")
        return int("".join("1" if b else "0" for b in chunk), 2) if size else 0

    count = read(32)
    word_size = read(5) + 1
    run_sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    while i < count:
        repeat = read(1)
        j = i + 1 + read(run_sizes[read(2)])
        if repeat:
            out[i:j] = read(word_size)
        else:
            for k in range(i, min(j, count)):
                out[k] = read(word_size)
        i = j
    return out


def encode_label_studio_rle(values: np.ndarray, word_size: int = 8, run_sizes: tuple[int, ...] = (3, 4, 8, 16)
                            ) -> list[int]:
    """Flat uint8 values -> Label Studio's brush RLE (the inverse of `decode_label_studio_rle`; label-studio-
    converter's `encode_rle` with its default field sizes), for writing brush pre-annotations."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    bits: list[str] = [format(values.size, "032b"), format(word_size - 1, "05b")]
    bits += [format(size - 1, "04b") for size in run_sizes]
    longest = (1 << run_sizes[-1])
    # Runs of equal values, each written as repeat records of at most `longest` values.
    change = np.flatnonzero(np.diff(values.astype(np.int16))) + 1
    starts = np.concatenate([[0], change]) if values.size else np.array([], dtype=np.int64)
    ends = np.concatenate([change, [values.size]]) if values.size else np.array([], dtype=np.int64)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        while start < end:
            length = min(end - start, longest)
            selector = next(i for i, size in enumerate(run_sizes) if length - 1 < (1 << size))
            bits.append("1" + format(selector, "02b") + format(length - 1, f"0{run_sizes[selector]}b")
                        + format(int(values[start]), f"0{word_size}b"))
            start += length
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[i:i + 8], 2) for i in range(0, len(stream), 8)]


def brush_mask(geometry: tuple[list[int], int, int], height: int, width: int) -> np.ndarray:
    """A Label Studio brush region: its RLE decoded to RGBA at the task's original size, covered where alpha >= 128."""
    rle, brush_height, brush_width = geometry
    rgba = decode_label_studio_rle(rle)
    if rgba.size != brush_height * brush_width * 4:
        raise ValueError(f"the brush RLE holds {rgba.size} values, not {brush_height}x{brush_width}x4")
    alpha = rgba.reshape(brush_height, brush_width, 4)[:, :, 3] >= BRUSH_ALPHA
    return _fit(alpha, height, width)


def line_mask(points: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    """A polyline drawn as labelme draws its lines: PIL `line`, `LINE_WIDTH` pixels wide."""
    canvas = Image.fromarray(np.zeros((height, width), dtype=np.uint8))
    ImageDraw.Draw(canvas).line(xy=[tuple(p) for p in points], fill=1, width=LINE_WIDTH)
    return np.array(canvas, dtype=bool)


def ellipse_mask(geometry: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    """An ellipse (centre x, y and radii) filled with PIL `ellipse`, as labelme fills its circles."""
    cx, cy, rx, ry = geometry
    canvas = Image.fromarray(np.zeros((height, width), dtype=np.uint8))
    ImageDraw.Draw(canvas).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=1, fill=1)
    return np.array(canvas, dtype=bool)


def _fit(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    # A mask drawn for the size the annotation declares, cut or padded to the image's (a size mismatch is reported
    # by the check; training refuses it before getting here).
    if mask.shape == (height, width):
        return mask
    out = np.zeros((height, width), dtype=bool)
    h, w = min(height, mask.shape[0]), min(width, mask.shape[1])
    out[:h, :w] = mask[:h, :w]
    return out


RASTERISERS = {
    "polygons": polygons_mask,
    "rle": rle_mask,
    "labelme": labelme_shape_mask,
    "cvat_mask": cvat_mask,
    "ls_brush": brush_mask,
    "line": line_mask,
    "ellipse": ellipse_mask,
}
