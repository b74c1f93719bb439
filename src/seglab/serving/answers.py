"""What `POST /predict` answers for a class map: the four formats, chosen by `?format=` or the Accept header."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping

import numpy as np
from PIL import Image

from seglab.data.classes import class_pixel_counts, indexed_image
from seglab.inference.spec import InferenceSpec
from seglab.serving.refusals import Refusal

# `?format=` value -> what it answers (the docs and `GET /model` list this table).
FORMATS: Mapping[str, str] = {
    "png": "palette PNG: pixel values are class indices, the palette colours them (image/png)",
    "index": "greyscale PNG of class indices, no palette (image/png)",
    "json": "per-class pixel counts and shares (application/json); &mask=1 adds the palette PNG in base64",
    "rle": "COCO run-length encoding, one annotation per class present (application/json)",
}
DEFAULT_FORMAT = "png"
# Accept media types that pick a format when `?format=` is absent (RLE and the index PNG need `?format=`).
ACCEPTED_MEDIA: Mapping[str, str] = {"image/png": "png", "application/json": "json"}


def choose_format(query: str | None, accept: str | None) -> str:
    """The answer's format: `query` (`?format=`) if given, else the first Accept media type this service
    answers, else the palette PNG. An unknown `?format=` or an Accept that names none of ours is a 406."""
    if query is not None:
        if query not in FORMATS:
            raise Refusal("unknown-format", f"format {query!r} is not one this service answers; choose one of "
                                            f"{', '.join(FORMATS)}")
        return query
    if not accept:
        return DEFAULT_FORMAT
    media = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    for medium in media:
        if medium in ACCEPTED_MEDIA:
            return ACCEPTED_MEDIA[medium]
        if medium in ("*/*", "image/*"):
            return DEFAULT_FORMAT
    raise Refusal("unknown-format", f"Accept: {accept} names nothing this service answers; accept image/png or "
                                    "application/json, or choose with ?format=png|index|json|rle")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # compress_level 1: a class map compresses well even so, and level 6 costs several ms per 512 px answer.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def class_shares(mask: np.ndarray, spec: InferenceSpec) -> list[dict]:
    """Each class's name, colour, pixel count and share of the image."""
    counts = class_pixel_counts(mask, spec.num_classes, spec.ignore_index)
    total = max(int(counts.sum()), 1)
    return [{"index": index, "name": name, "colour": list(colour), "pixels": int(count),
             "share": round(int(count) / total, 6)}
            for index, (name, colour, count) in enumerate(zip(spec.class_names, spec.palette, counts, strict=True))]


def text(counts: bytes | str) -> str:
    # pycocotools returns the compressed counts as bytes; JSON wants text (its stubs say str).
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def coco_rle(mask: np.ndarray, spec: InferenceSpec) -> list[dict]:
    """One COCO annotation per class present: `segmentation` is a compressed RLE (pycocotools' encoding, its
    `counts` as text) and `category_id` the class index."""
    from pycocotools import mask as coco_mask

    annotations = []
    for index in np.unique(mask):
        if index == spec.ignore_index or index >= spec.num_classes:
            continue
        binary = np.asfortranarray((mask == index).astype(np.uint8))
        rle = coco_mask.encode(binary)
        annotations.append({
            "category_id": int(index), "name": spec.class_names[index], "area": int(coco_mask.area(rle)),
            "bbox": [float(value) for value in coco_mask.toBbox(rle)],
            "segmentation": {"size": [int(size) for size in rle["size"]], "counts": text(rle["counts"])},
        })
    return annotations


def encode_answer(mask: np.ndarray, spec: InferenceSpec, answer_format: str, *, with_mask: bool = False
                  ) -> tuple[bytes, str]:
    """The answer's body and media type for class map `mask (H, W)` in `answer_format` (one of `FORMATS`)."""
    if mask.max(initial=0) > 255:
        raise ValueError("class indices above 255 do not fit a PNG answer")
    if answer_format == "png":
        return png_bytes(indexed_image(mask, spec.palette)), "image/png"
    if answer_format == "index":
        return png_bytes(Image.fromarray(mask.astype(np.uint8))), "image/png"
    height, width = mask.shape
    if answer_format == "json":
        content: dict = {"width": width, "height": height, "classes": class_shares(mask, spec)}
        if with_mask:
            content["mask_png"] = base64.b64encode(png_bytes(indexed_image(mask, spec.palette))).decode("ascii")
    elif answer_format == "rle":
        content = {"width": width, "height": height, "annotations": coco_rle(mask, spec)}
    else:
        raise ValueError(f"unknown answer format {answer_format!r}")
    return json.dumps(content).encode("utf-8"), "application/json"
