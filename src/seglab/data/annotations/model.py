"""What every annotation format is read into: images, each with its objects in drawing order, and the one painter
that turns them into a class-index mask.

The drawing rule shared by all formats (each format's module says how it orders its objects and what each shape
covers):

- the mask starts as class 0 (background, or the class named by a category with id 0 / LabelMe `_background_`);
- objects are painted in the order their format gives (later over earlier), each over the pixels its shape covers;
- a crowd region (COCO `iscrowd: 1`) is painted with `ignore_index` (`crowd="ignore"`, the default: its pixels
  belong to several objects, so neither loss nor score should use them) or with its class (`crowd="class"`);
- a label mapped to "ignore" (LabelMe `__ignore__`, as in labelme2voc.py) is painted with `ignore_index`;
- a label that the class table does not name is a problem (`unknown-label`), never a silent new class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seglab.data.files import FileProblem

# Class 0 when no category / label claims it.
BACKGROUND = "background"


@dataclass(frozen=True)
class AnnotatedObject:
    """One object (shape) of an annotated image: `kind` says which rasteriser draws `geometry`
    (`seglab.data.annotations.raster.RASTERISERS`), `label` is the key its class is looked up by (a COCO category
    id, a label name elsewhere), `object_id` names it in messages (`annotation 17`, `shape 3`)."""

    object_id: str
    label: Any
    kind: str
    geometry: Any
    crowd: bool = False


@dataclass(frozen=True)
class AnnotatedImage:
    """An image and its objects in drawing order, as read from `source` (the annotation file).

    `image_path` is where the image file was found (None when it is missing: `missing_image` says where it was
    looked for); `image_data` holds the image bytes when the annotation embeds them (LabelMe `imageData`).
    `declared_size` is the (height, width) the annotation states, None where it states none. `entry` names the
    image inside `source` (`image 12 (a.jpg)`) and, with the file's content hash, keys its cached mask."""

    source: Path
    entry: str
    image_path: Path | None
    objects: tuple[AnnotatedObject, ...]
    declared_size: tuple[int, int] | None = None
    image_data: bytes | None = field(default=None, repr=False)
    missing_image: str = ""  # where the image was looked for, when it was not found


@dataclass(frozen=True)
class ClassTable:
    """Class names in index order and how labels map to them: `lookup[label]` is a class index or the string
    "ignore" (painted with the ignore index). Built by each format's `class_table`, or from the user's
    `class_names` by name."""

    names: tuple[str, ...]
    lookup: dict[Any, int | str]

    def index(self, label: Any) -> int | str | None:
        """The class index of `label`, "ignore", or None for a label the table does not name."""
        return self.lookup.get(label)


def unique_names(names: Sequence[str], keys: Sequence[Any]) -> tuple[str, ...]:
    """`names` with each repeated name made unique by its key (`facade (id 3)`): class names must differ."""
    return tuple(f"{name} (id {key})" if list(names).count(name) > 1 else name
                 for name, key in zip(names, keys, strict=True))


def paint(image: AnnotatedImage, classes: ClassTable, height: int, width: int, *, ignore_index: int = 255,
          crowd: str = "ignore") -> np.ndarray:
    """The class-index mask (int64 `(height, width)`) of `image`'s objects under the rule in this module's
    docstring. Objects whose label is unknown or whose shape cannot be drawn are left out here; `check_image`
    reports them."""
    from seglab.data.annotations.raster import rasterise_window

    mask = np.zeros((height, width), dtype=np.int64)
    for obj in image.objects:
        target = classes.index(obj.label)
        if target is None:
            continue
        if target == "ignore" or (obj.crowd and crowd == "ignore"):
            target = ignore_index
        try:
            found = rasterise_window(obj, height, width)
        except (ValueError, TypeError, IndexError, KeyError):
            continue  # a shape that cannot be drawn; the check names it
        if found is not None:
            window, top, left = found
            mask[top:top + window.shape[0], left:left + window.shape[1]][window] = target
    return mask


def problem(image: AnnotatedImage, kind: str, text: str, obj: AnnotatedObject | None = None) -> FileProblem:
    """A problem of `image` (or of one of its objects) naming the annotation file, the image entry and the object."""
    where = f"{image.entry}, {obj.object_id}" if obj is not None else image.entry
    return FileProblem(image.source, kind, f"{where}: {text}")
