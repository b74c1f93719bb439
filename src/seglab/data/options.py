"""What a dataset is and how its files read, as plain values: `FolderOptions` (how masks encode classes and
how files pair up) and `DataOptions` (which dataset, where, at what size).

Torch-free on purpose: the command line builds its flags and choice lists from these fields without loading
torch, and a checkpoint's saved config is enough to rebuild its datasets (`DataOptions.from_flat`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seglab.errors import ConfigError
from seglab.keys import check_fields, check_value, flat_values, from_checked, is_int, option, option_keys

DATASETS = ("shapes", "pets", "folder")
SPLIT_SCHEMES = ("official", "random_80_20")
# The layouts whose masks are drawn from an annotation tool's export (seglab.data.annotations).
ANNOTATION_LAYOUTS = ("coco", "labelme", "cvat", "labelstudio")
LAYOUTS = ("auto", "images_masks", "mmseg", "segnet", "cityscapes", "lists", *ANNOTATION_LAYOUTS)
SPLIT_NAMES = ("train", "val", "test")
# What a COCO crowd region (`iscrowd: 1`) is painted with: the ignore index, or its own class.
CROWD_RULES = ("ignore", "class")

_VALUE_MAP_EXPECTED = "a non-empty mapping mask value (0..65535) -> class index (>= 0), e.g. {0: 0, 255: 1}"
_CLASS_NAMES_EXPECTED = "a non-empty list of distinct class names (non-empty strings)"
_SIZE_EXPECTED = "a positive int, [H, W] or null"


def _check_value_map(value_map: Mapping[int, int]) -> str | None:
    if not value_map:
        return _VALUE_MAP_EXPECTED
    for value, cls in value_map.items():
        if not (is_int(value) and is_int(cls)) or not 0 <= value < 65536 or cls < 0:
            return f"{_VALUE_MAP_EXPECTED} (entry {value!r}: {cls!r} is not)"
    return None


def _check_palette(palette: Mapping[int, Sequence[int] | str]) -> str | None:
    try:
        palette_colours(palette)
    except ConfigError as error:
        return f"a non-empty mapping class index -> colour, [r, g, b] or '#rrggbb', one colour per class ({error})"
    return None


def _check_class_names(names: Sequence[str]) -> str | None:
    if names and all(name.strip() for name in names) and len(set(names)) == len(names):
        return None
    return _CLASS_NAMES_EXPECTED


def _check_split_lists(lists: Mapping[str, str]) -> str | None:
    # The mapping's entries are as a YAML file gave them, of any type.
    paths = list(lists.values())
    if "train" in lists and set(lists) <= set(SPLIT_NAMES) and all(isinstance(p, str) and p.strip() for p in paths):
        return None
    return ("a mapping of train (and optionally val, test) to list files, e.g. {train: splits/train.txt, val: "
            "splits/val.txt}")


@dataclass(frozen=True)
class FolderOptions:
    """How a folder dataset's masks encode classes and how its files pair up: the one definition behind
    `FolderDataset`, `check_folders`, the `seglab data check` flags and the training config's folder fields.

    Each field is a config key defined by `seglab.keys.option` (help, accepted values). Values stay plain YAML
    types (dicts, lists, str, int, bool) so that a config holding these options dumps with `yaml.safe_dump`;
    `check()` validates them and the other methods return parsed forms.
    """

    value_map: Mapping[int, int] | None = option(
        None, check=_check_value_map,
        help="mask value -> class index (e.g. 255 -> 1 for 0/255 masks); other values are errors")
    palette: Mapping[int, Sequence[int] | str] | None = option(
        None, check=_check_palette,
        help="class index -> colour of RGB-coded masks, [r, g, b] or #rrggbb (not with a value map)")
    class_names: Sequence[str] | None = option(
        None, check=_check_class_names, expect=_CLASS_NAMES_EXPECTED,
        help="class names in index order (default class_0, class_1, ...)")
    num_classes: int | None = option(
        None, low=1, help="number of classes when no names are given (masks hold indices 0..N-1)")
    ignore_index: int = option(255, low=0, help="mask value (or class) meaning void, left out of the loss")
    mask_suffix: str = option("", help="suffix of mask stems, e.g. _mask for x.jpg <-> x_mask.png")
    image_suffix: str = option("", help="suffix of image stems, e.g. _leftImg8bit (removed before pairing)")
    recursive: bool = option(False, help="look into sub-folders too (stems must then be unique across sub-folders)")
    allow_unpaired: bool = option(
        False, help="skip images without a mask and masks without an image instead of failing")
    crowd: str = option(
        "ignore", choices=CROWD_RULES,
        help="annotation exports: COCO crowd regions (iscrowd) painted as ignore_index (ignore) or as their class "
             "(class)")

    def check(self) -> None:
        """Raise a `ConfigError` naming the first invalid value; the options are usable when this passes."""
        check_fields(self)
        self.check_combinations()

    def check_combinations(self) -> None:
        """The rules between keys, each key's own values being valid (as `seglab.keys.check_value` leaves them):
        these are said here, once, for both `check` and a training config's parsing."""
        if self.value_map is not None and self.palette is not None:
            raise ConfigError("give either value_map (single-channel masks) or palette (RGB masks), not both")
        if self.class_names is not None and self.num_classes is not None and self.num_classes != len(self.class_names):
            raise ConfigError(f"num_classes={self.num_classes} but {len(self.class_names)} class names were given")
        known = self.num_classes if self.class_names is None else len(self.class_names)
        targets = list((self.value_map or {}).values()) + list(self.palette or {})
        outside = sorted({int(t) for t in targets if known is not None and int(t) >= known and t != self.ignore_index})
        if outside and known is not None:  # (nothing is outside without a known class count)
            source = "value_map" if self.value_map is not None else "palette"
            raise ConfigError(
                f"{source} names classes {outside}, outside 0..{known - 1} (and not ignore_index "
                f"{self.ignore_index}); fix it or the class names / num_classes"
            )

    def palette_colours(self) -> dict[int, tuple[int, int, int]] | None:
        """The palette as `{class: (r, g, b)}`, from `[r, g, b]` lists or `"#rrggbb"` strings (None without one)."""
        return None if self.palette is None else palette_colours(self.palette)

    def resolved_class_names(self) -> tuple[str, ...]:
        """Class names from `class_names`, else `num_classes`, else the largest class the value map / palette
        names (the options are checked first)."""
        self.check()
        if self.class_names is not None:
            return tuple(str(name) for name in self.class_names)
        if self.num_classes is not None:
            return tuple(f"class_{i}" for i in range(self.num_classes))
        targets = [int(c) for c in [*(self.value_map or {}).values(), *(self.palette or {})] if c != self.ignore_index]
        if not targets:
            raise ConfigError(
                "cannot tell how many classes the masks hold: give the class names or their number "
                "(class_names / num_classes, --class-names / --num-classes), or a value map or palette"
            )
        return tuple(f"class_{i}" for i in range(max(targets) + 1))


def palette_colours(palette: Mapping[int, Sequence[int] | str]) -> dict[int, tuple[int, int, int]]:
    """A palette as `{class: (r, g, b)}`, from `[r, g, b]` lists or `"#rrggbb"` strings; a `ConfigError` says
    what is wrong with it."""
    if not isinstance(palette, Mapping) or not palette:
        raise ConfigError("the palette is empty")
    colours = {}
    for cls, colour in palette.items():
        if not is_int(cls) or cls < 0:
            raise ConfigError(f"palette key {cls!r} is not a class index (an integer >= 0)")
        colours[int(cls)] = parse_colour(cls, colour)
    if len(set(colours.values())) != len(colours):
        raise ConfigError("two classes in the palette share one colour; each class needs its own colour")
    return colours


def parse_colour(cls: object, colour: object) -> tuple[int, int, int]:
    """A class's colour from `[r, g, b]` or `"#rrggbb"` (the one colour parser of configs and flags)."""
    if isinstance(colour, str):
        if re.fullmatch(r"#[0-9a-fA-F]{6}", colour.strip()):
            text = colour.strip()
            return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
    elif isinstance(colour, Sequence) and len(colour) == 3 and all(is_int(c) and 0 <= c <= 255 for c in colour):
        return int(colour[0]), int(colour[1]), int(colour[2])
    raise ConfigError(
        f"palette colour {colour!r} of class {cls!r} is neither [r, g, b] (three integers 0..255) nor '#rrggbb'"
    )


@dataclass(frozen=True)
class DataOptions:
    """Which dataset a run reads, from where, and at what size: what `build_datasets` needs besides a seed.

    Each field is a config key defined by `seglab.keys.option`. A training config composes one (its flat keys are
    these fields and, through `folder`, the `FolderOptions` fields); a checkpoint's saved config rebuilds it with
    `from_flat`.
    """

    dataset: str = option(
        "shapes", choices=DATASETS,
        help="shapes (built-in synthetic), pets (Oxford-IIIT Pet) or folder (your own files)")
    data_root: str | None = option(
        None, help="pets: dataset folder; folder: a dataset tree with split folders (see layout)")
    layout: str = option(
        "auto", choices=LAYOUTS,
        help="folder with data_root: how the tree is laid out (auto: the one that fits; lists: split list files "
             "train.txt/val.txt/test.txt; coco, labelme, cvat, labelstudio: an annotation tool's export)")
    split_lists: dict[str, str] | None = option(
        None, check=_check_split_lists,
        help="layout lists: {split: list file} instead of data_root's own train.txt/val.txt/test.txt (relative "
             "paths are resolved against data_root; train required)")
    images_dir: str | None = option(None, help="folder: directory of training images (instead of data_root)")
    masks_dir: str | None = option(None, help="folder: directory of masks with the same file stems as the images")
    val_images_dir: str | None = option(
        None, help="folder: validation images (None: val_fraction of the training files)")
    val_masks_dir: str | None = option(None, help="folder: validation masks")
    test_images_dir: str | None = option(
        None, help="folder: test images; training ends by scoring best.ckpt on them")
    test_masks_dir: str | None = option(None, help="folder: test masks")
    # How masks encode classes: its fields are flat keys of this class's owner too (`seglab.keys.option_keys`).
    folder: FolderOptions = field(default_factory=FolderOptions)
    val_fraction: float = option(
        0.2, low=0, high=1, high_open=True,
        help="folder without a val split, pets: share of training files held out (seeded)")
    split_scheme: str = option(
        "official", choices=SPLIT_SCHEMES,
        help="pets: official trainval/test lists or random_80_20 as in seed 000")
    image_size: int | Sequence[int] | None = option(
        128, low=0, low_open=True, length=2, expect=_SIZE_EXPECTED,
        help="int (square), [H, W], or null (each file's own size; pair it with crop_size)")
    keep_aspect: bool = option(False, help="letterbox into image_size (padding ignored) instead of stretching")
    crop_size: int | Sequence[int] | None = option(
        None, low=0, low_open=True, length=2, expect=_SIZE_EXPECTED,
        help="int or [h, w]: train on random crops of this size (padded with ignore where smaller)")
    train_length: int | None = option(
        None, low=0, low_open=True,
        help="shapes: training samples per epoch; above 800 adds fresh procedural ones")
    val_length: int | None = option(
        None, low=0, low_open=True, help="shapes: validation samples (default 100)")

    def check(self) -> None:
        """Raise a `ConfigError` naming the first invalid value (folder options included)."""
        check_fields(self)
        self.check_combinations()

    def check_combinations(self) -> None:
        """The rules between keys (the folder options' included), each key's own values being valid: said here,
        once, for `check`, `from_flat` and a training config's parsing."""
        if self.split_lists is not None and (self.layout not in ("auto", "lists") or self.data_root is None):
            raise ConfigError("config key 'split_lists' needs data_root (the folder the listed paths are "
                              f"relative to) and layout lists or auto, got layout {self.layout!r}")
        if self.dataset == "folder" and not (self.images_dir and self.masks_dir) and not self.data_root:
            raise ConfigError("dataset 'folder' needs data_root (a dataset tree with split folders) or images_dir "
                              "and masks_dir")
        for split in ("", "val_", "test_"):
            if (getattr(self, f"{split}images_dir") is None) != (getattr(self, f"{split}masks_dir") is None):
                raise ConfigError(f"give both {split}images_dir and {split}masks_dir, or neither")
        if self.dataset == "pets" and not self.data_root:
            raise ConfigError("dataset 'pets' needs data_root (the Oxford-IIIT Pet folder)")
        self.folder.check_combinations()

    def image_hw(self) -> tuple[int, int] | None:
        """`image_size` as (H, W); None when every file keeps its own size."""
        return None if self.image_size is None else as_hw(self.image_size)

    def crop_hw(self) -> tuple[int, int] | None:
        """`crop_size` as (H, W), or None."""
        return None if self.crop_size is None else as_hw(self.crop_size)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> DataOptions:
        """The options held by a flat mapping of config keys (a checkpoint's saved config), each value checked by
        its key's definition; other keys are ignored and missing ones take their defaults."""
        checked = {name: check_value(key, values[name]) for name, key in option_keys(cls).items() if name in values}
        options = from_checked(cls, checked)
        options.check_combinations()
        return options

    def to_flat(self) -> dict[str, Any]:
        """Plain values by flat config key: these options' fields with the folder options' in place of `folder`."""
        return flat_values(self)


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """`224` -> `(224, 224)`; `(H, W)` unchanged."""
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))

