"""Users' own data: a folder of images and a folder of masks, paired by file name stem.

Pairing is by stem (`cat_01.jpg` <-> `cat_01.png`), never by sort order: real folders are not named in order,
and one missing mask would silently shift every later pair.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.classes import class_pixel_counts, default_palette
from seglab.data.files import (
    IMAGE_EXTENSIONS,
    FileProblem,
    MaskDecoder,
    display_path,
    is_listed_file,
    list_image_files,
    load_rgb,
    natural_key,
    require_labelled,
    size_mismatch,
)
from seglab.data.resize import as_hw, resize_arrays, to_tensors
from seglab.errors import ConfigError, DataError


def doc(text: str) -> dict[str, str]:
    """Dataclass field metadata carrying a config key's help (shown by `seglab train --help-config`)."""
    return {"help": text}



@dataclass(frozen=True)
class FolderOptions:
    """How a folder dataset's masks encode classes and how its files pair up: the one definition behind
    `FolderDataset`, `check_folders`, the `seglab data check` flags and the training config's folder fields.

    Values stay plain YAML types (dicts, lists, str, int, bool) so that a config inheriting this class dumps
    with `yaml.safe_dump`; `check()` validates them and the other methods return parsed forms.
    """

    value_map: dict | None = field(
        default=None,
        metadata=doc("mask value -> class index (e.g. 255 -> 1 for 0/255 masks); other values are errors"),
    )
    palette: dict | None = field(
        default=None,
        metadata=doc("class index -> colour of RGB-coded masks, [r, g, b] or #rrggbb (not with a value map)"),
    )
    class_names: list | None = field(
        default=None, metadata=doc("class names in index order (default class_0, class_1, ...)")
    )
    num_classes: int | None = field(
        default=None, metadata=doc("number of classes when no names are given (masks hold indices 0..N-1)")
    )
    ignore_index: int = field(default=255, metadata=doc("mask value (or class) meaning void, left out of the loss"))
    mask_suffix: str = field(default="", metadata=doc("suffix of mask stems, e.g. _mask for x.jpg <-> x_mask.png"))
    image_suffix: str = field(
        default="", metadata=doc("suffix of image stems, e.g. _leftImg8bit (removed before pairing)")
    )
    recursive: bool = field(
        default=False, metadata=doc("look into sub-folders too (stems must then be unique across sub-folders)")
    )
    allow_unpaired: bool = field(
        default=False, metadata=doc("skip images without a mask and masks without an image instead of failing")
    )

    def check(self) -> None:
        """Raise a `ConfigError` naming the first invalid value; the options are usable when this passes."""
        if self.value_map is not None:
            if not isinstance(self.value_map, Mapping) or not self.value_map:
                raise ConfigError(f"value_map must be a non-empty mapping value -> class, got {self.value_map!r}")
            for value, cls in self.value_map.items():
                if not (_is_int(value) and _is_int(cls)) or not 0 <= value < 65536 or cls < 0:
                    raise ConfigError(
                        f"value_map entry {value!r}: {cls!r} is not 'mask value (0..65535): class index (>= 0)'; "
                        "write it like {0: 0, 255: 1}"
                    )
        if self.palette is not None:
            self.palette_colours()
        if self.value_map is not None and self.palette is not None:
            raise ConfigError("give either value_map (single-channel masks) or palette (RGB masks), not both")
        if not _is_int(self.ignore_index) or self.ignore_index < 0:
            raise ConfigError(f"ignore_index must be an integer >= 0, got {self.ignore_index!r}")
        if self.num_classes is not None and (not _is_int(self.num_classes) or self.num_classes < 1):
            raise ConfigError(f"num_classes must be an integer >= 1, got {self.num_classes!r}")
        if self.class_names is not None:
            names = self.class_names
            if isinstance(names, str) or not isinstance(names, Sequence) or not names:
                raise ConfigError(f"class_names must be a non-empty list of names, got {names!r}")
            if not all(isinstance(name, str) and name.strip() for name in names):
                raise ConfigError(f"class_names must all be non-empty strings, got {list(names)!r}")
            if len(set(names)) != len(names):
                repeated = sorted({name for name in names if names.count(name) > 1})
                raise ConfigError(f"class_names repeats {', '.join(repeated)}; each class needs its own name")
            if self.num_classes is not None and self.num_classes != len(names):
                raise ConfigError(f"num_classes={self.num_classes} but {len(names)} class names were given")
        for name in ("mask_suffix", "image_suffix"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("recursive", "allow_unpaired"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        known = self.num_classes if self.class_names is None else len(self.class_names)
        targets = list((self.value_map or {}).values()) + list(self.palette or {})
        outside = sorted({int(t) for t in targets if known is not None and int(t) >= known and t != self.ignore_index})
        if outside:
            source = "value_map" if self.value_map is not None else "palette"
            raise ConfigError(
                f"{source} names classes {outside}, outside 0..{known - 1} (and not ignore_index "
                f"{self.ignore_index}); fix it or the class names / num_classes"
            )

    def palette_colours(self) -> dict[int, tuple[int, int, int]] | None:
        """The palette as `{class: (r, g, b)}`, from `[r, g, b]` lists or `"#rrggbb"` strings (None without one)."""
        if self.palette is None:
            return None
        if not isinstance(self.palette, Mapping) or not self.palette:
            raise ConfigError(f"palette must be a non-empty mapping class -> colour, got {self.palette!r}")
        colours = {}
        for cls, colour in self.palette.items():
            if not _is_int(cls) or cls < 0:
                raise ConfigError(f"palette key {cls!r} is not a class index (an integer >= 0)")
            colours[int(cls)] = _parse_colour(cls, colour)
        if len(set(colours.values())) != len(colours):
            raise ConfigError("two classes in the palette share one colour; each class needs its own colour")
        return colours

    def resolved_class_names(self) -> tuple[str, ...]:
        """Class names from `class_names`, else `num_classes`, else the largest class the value map / palette names."""
        return resolve_classes(
            self.class_names, self.num_classes, self.value_map, self.palette_colours(), self.ignore_index
        )

    def pair(self, images_dir: Path | str, masks_dir: Path | str) -> Pairing:
        """The image/mask pairs of two folders under these options' pairing rules (suffixes, sub-folders)."""
        return pair_files(images_dir, masks_dir, mask_suffix=self.mask_suffix, image_suffix=self.image_suffix,
                          recursive=self.recursive)

    def decoder(self) -> MaskDecoder:
        """The `MaskDecoder` that reads masks as these options describe (checks the options first)."""
        self.check()
        names = self.resolved_class_names()
        return MaskDecoder(
            len(names), value_map=self.value_map, palette=self.palette_colours(), ignore_index=self.ignore_index
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _parse_colour(cls: Any, colour: Any) -> tuple[int, int, int]:
    if isinstance(colour, str):
        if re.fullmatch(r"#[0-9a-fA-F]{6}", colour.strip()):
            text = colour.strip()
            return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
    elif isinstance(colour, Sequence) and len(colour) == 3 and all(_is_int(c) and 0 <= c <= 255 for c in colour):
        return int(colour[0]), int(colour[1]), int(colour[2])
    raise ConfigError(
        f"palette colour {colour!r} of class {cls!r} is neither [r, g, b] (three integers 0..255) nor '#rrggbb'"
    )


def merge_options(options: FolderOptions | None, **legacy: Any) -> FolderOptions:
    """`options`, or the `FolderOptions` built from separate keyword arguments; giving both is an error."""
    from_keywords = FolderOptions(**legacy)
    if options is None:
        return from_keywords
    if from_keywords != FolderOptions():
        given = sorted(k for k, v in legacy.items() if v != getattr(FolderOptions(), k))
        raise ConfigError(f"pass the folder options either as options= or as keywords ({', '.join(given)}), not both")
    return options


@dataclass
class Pairing:
    """Result of matching two folders: the pairs, and every file that found no partner."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    images_without_mask: list[Path] = field(default_factory=list)
    masks_without_image: list[Path] = field(default_factory=list)
    duplicates: list[list[Path]] = field(default_factory=list)  # several files sharing one stem in one folder
    image_count: int = 0  # image files found in the images folder, paired or not

    def report(self, limit: int = 10) -> str:
        """A readable list of the unpaired and ambiguous files (at most `limit` of each kind), each line tagged as
        `seglab data check` tags them."""
        lines = []
        for title, paths in (
            ("images without a mask", self.images_without_mask),
            ("masks without an image", self.masks_without_image),
        ):
            if paths:
                shown = ", ".join(display_path(p.name) for p in paths[:limit])
                more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
                lines.append(f"[unpaired] {len(paths)} {title}: {shown}{more}")
        for group in self.duplicates[:limit]:
            names = ", ".join(display_path(p) for p in group)
            lines.append(f"[duplicate-stem] several files share the stem {display_path(group[0].stem)!r}: {names}")
        return "\n".join(lines)


def list_images(folder: Path | str, *, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and its sub-folders with `recursive=True`), skipping hidden files and folders."""
    if not recursive:
        return list_image_files(folder)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; pass the folder that holds the image files")
    return [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and is_listed_file(p)
    ]


def pair_files(
    images_dir: Path | str,
    masks_dir: Path | str,
    *,
    mask_suffix: str = "",
    image_suffix: str = "",
    recursive: bool = False,
) -> Pairing:
    """Match images to masks by file stem after removing `image_suffix` / `mask_suffix` (e.g. `"_mask"`).

    With `recursive=True` both folders are searched with their sub-folders, so stems must be unique across them.
    An image without `image_suffix` is reported as unpaired; a file without `mask_suffix` in the masks folder is
    not a mask and is skipped (Cityscapes keeps `_gtFine_color.png` beside `_gtFine_labelIds.png`): each image
    still needs its mask, so nothing is dropped silently.
    """

    def by_stem(paths: list[Path], suffix: str, *, skip_others: bool) -> dict[str, list[Path]]:
        groups: dict[str, list[Path]] = {}
        for path in paths:
            stem = path.stem
            if suffix:
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                elif skip_others:
                    continue
                else:
                    stem = "\0" + stem  # a stem no mask can have: reported as unpaired
            groups.setdefault(stem, []).append(path)
        return groups

    image_files = list_images(images_dir, recursive=recursive)
    images = by_stem(image_files, image_suffix, skip_others=False)
    masks = by_stem(list_images(masks_dir, recursive=recursive), mask_suffix, skip_others=True)
    # A stem shared by several files is reported once as a duplicate, and its partner is not called unpaired.
    duplicates = [sorted(group) for group in [*images.values(), *masks.values()] if len(group) > 1]
    stems = [s for s in images.keys() & masks.keys() if len(images[s]) == len(masks[s]) == 1]

    def by_name(groups) -> list[Path]:
        return sorted(
            (path for group in groups for path in group if len(group) == 1), key=lambda p: natural_key(p.name)
        )

    return Pairing(
        pairs=[(images[s][0], masks[s][0]) for s in sorted(stems, key=natural_key)],
        images_without_mask=by_name(images[s] for s in images.keys() - masks.keys()),
        masks_without_image=by_name(masks[s] for s in masks.keys() - images.keys()),
        duplicates=duplicates,
        image_count=len(image_files),
    )


def no_images(folder: Path | str, options: FolderOptions) -> FileProblem:
    """The "no-images" problem of an images folder in which no image file was found."""
    hint = "" if options.recursive else " (set recursive for images in sub-folders)"
    return FileProblem(folder, "no-images", f"the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
                                            f"{hint}; check the path")


def resolve_classes(
    class_names: Sequence[str] | None,
    num_classes: int | None,
    value_map: Mapping[int, int] | None,
    palette: Mapping[int, Sequence[int]] | None,
    ignore_index: int,
) -> tuple[str, ...]:
    """Class names from what the user gave: names, a count, or the largest class a value map / palette names."""
    if class_names is not None:
        names = tuple(str(n) for n in class_names)
        if num_classes is not None and num_classes != len(names):
            raise ConfigError(f"num_classes={num_classes} but {len(names)} class names were given")
        return names
    if num_classes is None:
        targets = [c for c in (value_map or {}).values()] + [c for c in (palette or {})]
        targets = [int(c) for c in targets if int(c) != ignore_index]
        if not targets:
            raise ConfigError(
                "cannot tell how many classes the masks hold: give the class names or their number "
                "(class_names / num_classes, --class-names / --num-classes), or a value map or palette"
            )
        num_classes = max(targets) + 1
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    return tuple(f"class_{i}" for i in range(num_classes))


class FolderDataset(Dataset):
    """Images and masks from two folders, paired by stem: image float32 `(3, H, W)` in [0, 1], mask int64 `(H, W)`.

    `options` (a `FolderOptions`) says how masks encode classes and how files pair up; the separate keywords
    (`value_map`, `palette`, `class_names`, ...) build one for callers that predate it (give one or the other).
    Masks hold class indices, or colours decoded with `palette` (class -> colour), or values decoded with
    `value_map` (stored value -> class, e.g. `{0: 0, 255: 1}`); either may send void to `ignore_index`. Classes
    come from `class_names`, else `num_classes`, else the largest class the value map / palette names.
    `size` (int or (H, W)) resizes every sample (image antialiased bilinear, mask nearest), letterboxed
    with `keep_aspect=True`; `size=None` keeps the files' size. Unpaired files raise a `DataError` listing
    them unless `allow_unpaired=True`, which skips them.
    """

    def __init__(
        self,
        images_dir: Path | str,
        masks_dir: Path | str,
        *,
        options: FolderOptions | None = None,
        size: int | tuple[int, int] | None = None,
        value_map: Mapping[int, int] | None = None,
        palette: Mapping[int, Sequence[int] | str] | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        num_classes: int | None = None,
        mask_suffix: str = "",
        image_suffix: str = "",
        recursive: bool = False,
        keep_aspect: bool = False,
        allow_unpaired: bool = False,
    ) -> None:
        self.options = options = merge_options(
            options,
            value_map=value_map,
            palette=palette,
            class_names=class_names,
            ignore_index=ignore_index,
            num_classes=num_classes,
            mask_suffix=mask_suffix,
            image_suffix=image_suffix,
            recursive=recursive,
            allow_unpaired=allow_unpaired,
        )
        self.images_dir, self.masks_dir = Path(images_dir), Path(masks_dir)
        self.decoder = options.decoder()
        self.class_names = options.resolved_class_names()
        self.num_classes = len(self.class_names)
        self.ignore_index = options.ignore_index
        self.size = None if size is None else as_hw(size)
        self.keep_aspect = keep_aspect
        pairing = options.pair(self.images_dir, self.masks_dir)
        if not pairing.image_count:
            raise no_images(self.images_dir, options)
        unpaired = pairing.images_without_mask or pairing.masks_without_image
        if pairing.duplicates or (unpaired and not options.allow_unpaired):
            raise DataError(
                f"{self.images_dir} and {self.masks_dir} do not pair up one to one by file name:\n"
                f"{pairing.report()}\nrename or remove these files (or pass allow_unpaired=True to skip unpaired ones)"
            )
        if not pairing.pairs:
            raise DataError(
                f"no image in {self.images_dir} has a mask with the same name in {self.masks_dir}; check the folders "
                "(and the mask / image suffix, if files are named like 'x_mask.png', or recursive for sub-folders)"
            )
        self.pairs = pairing.pairs
        self.unpaired = pairing

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """Display colours per class: the masks' own palette when it names every class, else seglab's default."""
        colours = self.options.palette_colours()
        if not colours or any(index not in colours for index in range(self.num_classes)):
            return default_palette(self.num_classes)
        return tuple(colours[index] for index in range(self.num_classes))

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair at `index` as numpy arrays at the files' size: uint8 `(H, W, 3)` and int64 `(H, W)`."""
        image_path, mask_path = self.pairs[index]
        rgb = load_rgb(image_path)
        mask = self.decoder.read(mask_path)
        if rgb.shape[:2] != mask.shape:
            raise size_mismatch(mask_path, mask.shape, image_path, rgb.shape)
        return rgb, require_labelled(mask, mask_path, self.ignore_index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask_array = self.load(index)
        if self.size is not None:
            rgb, mask_array = resize_arrays(
                rgb, mask_array, self.size, keep_aspect=self.keep_aspect, ignore_index=self.ignore_index
            )
        return to_tensors(rgb, mask_array)

    def class_frequencies(self) -> dict[str, float]:
        """Fraction of labelled pixels per class over the whole dataset (reads every mask once)."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for _, mask_path in self.pairs:
            counts += class_pixel_counts(self.decoder.read(mask_path), self.num_classes, self.ignore_index)
        total = max(int(counts.sum()), 1)
        return {name: float(c) / total for name, c in zip(self.class_names, counts, strict=True)}
