"""Annotation exports as datasets see them: which files make a split, the class table over all the splits, the
check of every image and object, and the content-keyed cache of rasterised masks.

The cache: each image's class mask is rasterised once per version of its annotation file and stored as a PNG
under `cache_dir()` (`$SEGLAB_CACHE/annotation_masks`, else `~/.cache/seglab/annotation_masks`), named by a
sha256 of the annotation file's bytes, the image's entry, the class table, the ignore index, the crowd rule and
`RULES_VERSION`. Editing the annotation file (or the classes) makes new names; masks are never rasterised once per
epoch. `prepare_annotation_cache` fills it (a datamodule's `prepare_data` calls it through `refuse_bad_files`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seglab.atomic import atomic_path
from seglab.data.annotations import coco, cvat, labelme, labelstudio
from seglab.data.annotations.model import (
    BACKGROUND,
    AnnotatedImage,
    ClassTable,
    paint,
    problem,
    unique_names,
)
from seglab.data.annotations.raster import rasterise_object
from seglab.data.files import FileProblem, open_image, rgb_array
from seglab.data.options import CROWD_RULES
from seglab.errors import ConfigError

FORMATS = ("coco", "labelme", "cvat", "labelstudio")
# Bump when a drawing rule changes: every cached mask is then rasterised again.
RULES_VERSION = "1"
# Problems that leave the mask drawable (the shape is skipped or clipped): listed by `seglab data check` and
# warned about by training, which goes on.
WARNING_TAGS = ("bad-shape", "outside-image")


def cache_dir() -> Path:
    """Where rasterised masks live: $SEGLAB_CACHE/annotation_masks, else ~/.cache/seglab/annotation_masks."""
    root = os.environ.get("SEGLAB_CACHE") or Path.home() / ".cache" / "seglab"
    return Path(root) / "annotation_masks"


@dataclass(frozen=True)
class AnnotationSplit:
    """One split of an annotation export: its format, its annotation `files`, the split name (CVAT XML files hold
    all splits, told apart by each image's subset), the other folders its images may be in, and `all_files`, the
    annotation files of every split (the class table is built over all of them, so splits agree)."""

    format: str
    files: tuple[Path, ...]
    split: str = "train"
    image_folders: tuple[Path, ...] = ()
    all_files: tuple[Path, ...] = field(default=())

    def images(self) -> list[AnnotatedImage]:
        """This split's annotated images, in file order."""
        found = []
        for path in self.files:
            images, splits, _, _ = read_file(self.format, path, self.image_folders)
            found += [image for image, split in zip(images, splits, strict=True)
                      if self.format != "cvat" or split == self.split]
        return found

    def class_table(self, class_names: Sequence[str] | None = None) -> ClassTable:
        """The classes of the whole export (`class_table`), or `class_names` given by the user."""
        return class_table(self.format, self.all_files or self.files, self.image_folders, class_names)

    def describe(self, root: Path | str | None = None) -> str:
        names = ", ".join(_relative(path, root) for path in self.files[:3])
        more = f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
        subset = f" (images of subset {self.split})" if self.format == "cvat" else ""
        return f"{self.format} annotations {names}{more}{subset}"


@functools.lru_cache(maxsize=64)
def _read(format_name: str, path: Path, folders: tuple[Path, ...], stamp: tuple[int, int]) -> tuple:
    if format_name == "coco":
        images, categories, used = coco.read_coco(path, folders)
        return images, ["train"] * len(images), categories, used
    if format_name == "labelme":
        image = labelme.read_labelme(path)
        return [image], ["train"], [], {obj.label for obj in image.objects}
    if format_name == "cvat":
        images, declared, splits = cvat.read_cvat(path, folders)
        return images, splits, declared, {obj.label for image in images for obj in image.objects}
    if format_name == "labelstudio":
        images = labelstudio.read_label_studio(path, folders)
        return images, ["train"] * len(images), [], {obj.label for image in images for obj in image.objects}
    raise ConfigError(f"unknown annotation format {format_name!r}; choose one of {', '.join(FORMATS)}")


def read_file(format_name: str, path: Path, folders: Sequence[Path] = ()) -> tuple:
    """(images, split of each image, declared labels / COCO categories, labels used) of one annotation file, read
    once per version of the file."""
    stat = Path(path).stat()
    return _read(format_name, Path(path), tuple(folders), (stat.st_mtime_ns, stat.st_size))


def class_table(format_name: str, files: Iterable[Path], folders: Sequence[Path] = (),
                class_names: Sequence[str] | None = None) -> ClassTable:
    """The class table of an export's files under the rules in each format's module docstring; with
    `class_names`, labels map to the index of their name there (others are unknown)."""
    files = list(files)
    reads = [read_file(format_name, path, folders) for path in files]
    if format_name == "coco":
        categories: dict[Any, str] = {}
        used: set = set()
        for path, (_, _, file_categories, file_used) in zip(files, reads, strict=True):
            used |= file_used
            for category in file_categories:
                if categories.setdefault(category["id"], category.get("name", "")) != category.get("name", ""):
                    raise FileProblem(path, "unknown-label",
                                      f"category id {category['id']} is named {categories[category['id']]!r} in one "
                                      f"file and {category.get('name')!r} in another; export the splits together")
        all_categories = [c for _, _, file_categories, _ in reads for c in file_categories]
        parents = coco.roboflow_parents(all_categories, used)
        kept = sorted((key for key in categories if key not in parents), key=_id_order)
        if class_names is not None:
            names = {key: categories[key] for key in kept}
            return _by_name(class_names, names)
        ordered = kept if 0 in kept else [BACKGROUND, *kept]
        labels = [categories.get(key, BACKGROUND) if key != BACKGROUND else BACKGROUND for key in ordered]
        names = unique_names(labels, ordered)
        return ClassTable(names, {key: index for index, key in enumerate(ordered) if key != BACKGROUND})
    declared = [label for _, _, file_declared, _ in reads for label in file_declared]
    used = {label for _, _, _, file_used in reads for label in file_used}
    # Labels a file declares (CVAT's <meta>) are the classes, in their order; other formats declare none, so the
    # labels their objects use are, in name order.
    order = list(dict.fromkeys(declared)) if declared else sorted(used, key=str)
    if class_names is not None:
        return _by_name(class_names, {label: label for label in order})
    lookup: dict[Any, int | str] = {label: 0 for label in order if label in labelme.BACKGROUND_LABELS}
    lookup |= {label: "ignore" for label in order if label == labelme.IGNORE_LABEL}
    others = [label for label in order if label not in lookup]
    background = next((label for label in order if label in labelme.BACKGROUND_LABELS), BACKGROUND)
    lookup |= {label: index for index, label in enumerate(others, start=1)}
    return ClassTable((background, *others), lookup)


def _by_name(class_names: Sequence[str], names: dict[Any, str]) -> ClassTable:
    index = {name: i for i, name in enumerate(class_names)}
    lookup: dict[Any, int | str] = {key: index[name] for key, name in names.items() if name in index}
    for key, name in names.items():
        if name == labelme.IGNORE_LABEL:
            lookup[key] = "ignore"
        elif name in labelme.BACKGROUND_LABELS and key not in lookup:
            lookup[key] = 0
    return ClassTable(tuple(class_names), lookup)


def _id_order(key: Any) -> tuple:
    return (0, key, "") if isinstance(key, int) else (1, 0, str(key))


@functools.lru_cache(maxsize=256)
def _file_digest(path: Path, stamp: tuple[int, int]) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of an annotation file's bytes, computed once per version of the file."""
    stat = path.stat()
    return _file_digest(path, (stat.st_mtime_ns, stat.st_size))


def image_array(image: AnnotatedImage) -> np.ndarray:
    """The annotated image as uint8 RGB `(H, W, 3)`, upright: its file, or the bytes the annotation embeds."""
    if image.image_path is not None:
        from seglab.data.files import load_rgb

        return load_rgb(image.image_path)
    if image.image_data is not None:
        import io

        with Image.open(io.BytesIO(image.image_data)) as embedded:
            embedded.load()
            return rgb_array(embedded)
    raise problem(image, "missing", f"the image is missing: {image.missing_image}; copy it there or fix the path")


def image_size(image: AnnotatedImage) -> tuple[int, int]:
    """(height, width) of the annotated image, upright, from its header (or the embedded bytes)."""
    if image.image_path is not None:
        with open_image(image.image_path) as opened:  # decoded and turned upright: a broken file shows here
            width, height = opened.size
        return height, width
    return image_array(image).shape[:2]


@dataclass(frozen=True)
class MaskRules:
    """How an export's masks are painted: its class table, the ignore index and the crowd rule (`CROWD_RULES`)."""

    classes: ClassTable
    ignore_index: int = 255
    crowd: str = "ignore"

    def __post_init__(self) -> None:
        if self.crowd not in CROWD_RULES:
            raise ConfigError(f"crowd rule {self.crowd!r}: choose one of {', '.join(CROWD_RULES)}")

    def key(self) -> str:
        table = json.dumps([list(self.classes.names), sorted((str(k), str(v)) for k, v in
                                                              self.classes.lookup.items())])
        return f"{RULES_VERSION}|{table}|{self.ignore_index}|{self.crowd}"


class MaskCache:
    """Rasterised masks on disk, one PNG per (annotation file version, image entry, rules, size)."""

    def __init__(self, rules: MaskRules, folder: Path | str | None = None) -> None:
        self.rules = rules
        self.folder = Path(folder) if folder is not None else cache_dir()
        self._rules_key = rules.key()

    def path(self, image: AnnotatedImage, size: tuple[int, int]) -> Path:
        """Where `image`'s mask at `size` (height, width) is (or will be) cached."""
        text = f"{file_digest(image.source)}|{image.entry}|{self._rules_key}|{size}"
        digest = hashlib.sha256(text.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.png"

    def mask(self, image: AnnotatedImage, size: tuple[int, int]) -> np.ndarray:
        """`image`'s class mask (int64) at `size`, from the cache, rasterised and stored there the first time."""
        path = self.path(image, size)
        if path.is_file():
            try:
                with Image.open(path) as cached:
                    return np.asarray(cached).astype(np.int64)
            except OSError:
                pass  # a damaged cache file: rasterise again and replace it
        mask = paint(image, self.rules.classes, *size, ignore_index=self.rules.ignore_index, crowd=self.rules.crowd)
        stored = mask.astype(np.uint8) if mask.max(initial=0) < 256 else mask.astype(np.uint16)
        with atomic_path(path, what="cached mask ") as temporary:
            Image.fromarray(stored).save(temporary, format="PNG")
        return mask


def check_image(image: AnnotatedImage, classes: ClassTable) -> tuple[list[FileProblem], tuple[int, int] | None]:
    """Every problem of one annotated image and its objects (missing or unreadable image, size different from
    the declared one, unknown labels, shapes that cannot be drawn, coordinates outside the image), and the
    image's (height, width) when it could be read."""
    found: list[FileProblem] = []
    if image.image_path is None and image.image_data is None:
        return [problem(image, "missing", f"the image is missing: {image.missing_image}; copy it there or fix "
                                          "the path")], None
    try:
        size = image_size(image)
    except FileProblem as error:
        return [error], None
    except OSError as error:
        return [problem(image, "unreadable", f"the embedded image cannot be read ({error})")], None
    if image.declared_size is not None and tuple(image.declared_size) != tuple(size):
        found.append(problem(image, "size-mismatch",
                             f"the annotation says {image.declared_size[1]}x{image.declared_size[0]} but the image "
                             f"is {size[1]}x{size[0]}; re-export the annotations for this image (or restore the "
                             "image the tool saw)"))
    height, width = size
    for obj in image.objects:
        if classes.index(obj.label) is None:
            found.append(problem(image, "unknown-label", f"label {obj.label!r} is not a class "
                                                         f"({', '.join(classes.names)}); add it to class_names "
                                                         "or fix the object", obj))
        text = shape_problem(obj)
        if text:
            found.append(problem(image, "bad-shape", f"{text}; it is left out of the mask", obj))
            continue
        points = shape_points(obj)
        if points.size and (points[:, 0].min() < 0 or points[:, 1].min() < 0 or points[:, 0].max() > width
                            or points[:, 1].max() > height):
            found.append(problem(image, "outside-image", f"coordinates reach ({points[:, 0].min():g}.."
                                                         f"{points[:, 0].max():g}, {points[:, 1].min():g}.."
                                                         f"{points[:, 1].max():g}), outside the {width}x{height} "
                                                         "image; drawn clipped", obj))
        try:
            if obj.kind in ("rle", "cvat_mask", "ls_brush"):  # run lengths are only known good once decoded
                rasterise_object(obj, height, width)
        except (ValueError, TypeError, IndexError, KeyError) as error:
            found.append(problem(image, "bad-shape", f"cannot be drawn ({error}); it is left out of the mask", obj))
    return found, size


def shape_problem(obj: Any) -> str:
    """Why an object's shape cannot be drawn, or ""."""
    if obj.kind == "labelme":
        return labelme.shape_problem(*obj.geometry)
    if obj.kind == "polygons":
        if not obj.geometry:
            return "it has no segmentation (a box-only annotation?)"
        short = [len(polygon) // 2 for polygon in obj.geometry if len(polygon) < 6]
        if short:
            return f"a polygon with fewer than 3 points ({short[0]})"
    if obj.kind == "line" and len(obj.geometry) < 2:
        return "a polyline needs 2 points or more"
    return ""


def shape_points(obj: Any) -> np.ndarray:
    """The vertices of a vector shape as an `(N, 2)` array (empty for RLE and bitmaps)."""
    if obj.kind == "polygons":
        values = [v for polygon in obj.geometry for v in polygon]
        return np.asarray(values, dtype=float).reshape(-1, 2)
    if obj.kind in ("labelme", "line"):
        points = obj.geometry[1] if obj.kind == "labelme" else obj.geometry
        if obj.kind == "labelme" and obj.geometry[0] == "mask":
            return np.zeros((0, 2))
        return np.asarray(points, dtype=float).reshape(-1, 2)
    return np.zeros((0, 2))


def prepare_annotation_cache(images: Sequence[AnnotatedImage], rules: MaskRules, *, cache: MaskCache | None = None,
                             action: str = "training") -> list[FileProblem]:
    """Check every image and object of an export and rasterise each good image's mask into the cache (once per
    version of its annotation file). Returns the problems that stop `action` (missing or unreadable images, size
    mismatches, unknown labels); warns once about objects that are drawn clipped or left out."""
    cache = cache or MaskCache(rules)
    errors, notes = [], []
    for image in images:
        found, size = check_image(image, rules.classes)
        errors += [p for p in found if p.kind not in WARNING_TAGS]
        notes += [p for p in found if p.kind in WARNING_TAGS]
        if size is not None and not any(p.kind not in WARNING_TAGS for p in found):
            cache.mask(image, size)
    if notes:
        shown = "\n".join(f"  [{p.kind}] {p}" for p in notes[:5])
        more = f"\n  ... and {len(notes) - 5} more" if len(notes) > 5 else ""
        warnings.warn(f"{len(notes)} annotated objects are drawn clipped or left out ({action} goes on; "
                      f"`seglab data check` lists them all):\n{shown}{more}", stacklevel=2)
    return errors


def _relative(path: Path, root: Path | str | None) -> str:
    if root is None:
        return str(path)
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)
