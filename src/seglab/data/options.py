"""What a dataset is and how its files read, as plain values: `FolderOptions` (how masks encode classes and
how files pair up) and `DataOptions` (which dataset, where, at what size).

Torch-free on purpose: the command line builds its flags and choice lists from these fields without loading
torch, and a checkpoint's saved config is enough to rebuild its datasets (`DataOptions.from_flat`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, TypeGuard

from seglab.errors import ConfigError

DATASETS = ("shapes", "pets", "folder")
SPLIT_SCHEMES = ("official", "random_80_20")
# The layouts whose masks are drawn from an annotation tool's export (seglab.data.annotations).
ANNOTATION_LAYOUTS = ("coco", "labelme", "cvat", "labelstudio")
LAYOUTS = ("auto", "images_masks", "mmseg", "segnet", "cityscapes", "lists", *ANNOTATION_LAYOUTS)
SPLIT_NAMES = ("train", "val", "test")


# What a COCO crowd region (`iscrowd: 1`) is painted with: the ignore index, or its own class.
CROWD_RULES = ("ignore", "class")

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
    crowd: str = field(
        default="ignore",
        metadata=doc("annotation exports: COCO crowd regions (iscrowd) painted as ignore_index (ignore) or as their "
                     "class (class)"),
    )

    def check(self) -> None:
        """Raise a `ConfigError` naming the first invalid value; the options are usable when this passes."""
        if self.value_map is not None:
            if not isinstance(self.value_map, Mapping) or not self.value_map:
                raise ConfigError(f"value_map must be a non-empty mapping value -> class, got {self.value_map!r}")
            for value, cls in self.value_map.items():
                if not (is_int(value) and is_int(cls)) or not 0 <= value < 65536 or cls < 0:
                    raise ConfigError(
                        f"value_map entry {value!r}: {cls!r} is not 'mask value (0..65535): class index (>= 0)'; "
                        "write it like {0: 0, 255: 1}"
                    )
        if self.palette is not None:
            self.palette_colours()
        if self.value_map is not None and self.palette is not None:
            raise ConfigError("give either value_map (single-channel masks) or palette (RGB masks), not both")
        if not is_int(self.ignore_index) or self.ignore_index < 0:
            raise ConfigError(f"ignore_index must be an integer >= 0, got {self.ignore_index!r}")
        if self.num_classes is not None and (not is_int(self.num_classes) or self.num_classes < 1):
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
        if self.crowd not in CROWD_RULES:
            raise ConfigError(f"crowd must be one of {', '.join(CROWD_RULES)}, got {self.crowd!r}")
        for name in ("recursive", "allow_unpaired"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
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
        if self.palette is None:
            return None
        if not isinstance(self.palette, Mapping) or not self.palette:
            raise ConfigError(f"palette must be a non-empty mapping class -> colour, got {self.palette!r}")
        colours = {}
        for cls, colour in self.palette.items():
            if not is_int(cls) or cls < 0:
                raise ConfigError(f"palette key {cls!r} is not a class index (an integer >= 0)")
            colours[int(cls)] = parse_colour(cls, colour)
        if len(set(colours.values())) != len(colours):
            raise ConfigError("two classes in the palette share one colour; each class needs its own colour")
        return colours

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


def is_int(value: Any) -> TypeGuard[int]:
    """An integer that is not a bool (YAML's true/false are ints to Python)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def parse_colour(cls: Any, colour: Any) -> tuple[int, int, int]:
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

    A training config composes one (its flat keys are these fields and, through `folder`, the `FolderOptions`
    fields); a checkpoint's saved config rebuilds it with `from_flat`.
    """

    dataset: str = field(
        default="shapes",
        metadata=doc("shapes (built-in synthetic), pets (Oxford-IIIT Pet) or folder (your own files)"),
    )
    data_root: str | None = field(
        default=None, metadata=doc("pets: dataset folder; folder: a dataset tree with split folders (see layout)"))
    layout: str = field(
        default="auto",
        metadata=doc("folder with data_root: auto, images_masks, mmseg, segnet, cityscapes, lists (split list "
                     "files train.txt/val.txt/test.txt), or an annotation tool's export: coco, labelme, cvat, "
                     "labelstudio"))
    split_lists: dict | None = field(
        default=None,
        metadata=doc("layout lists: {split: list file} instead of data_root's own train.txt/val.txt/test.txt "
                     "(relative paths are resolved against data_root; train required)"))
    images_dir: str | None = field(
        default=None, metadata=doc("folder: directory of training images (instead of data_root)"))
    masks_dir: str | None = field(
        default=None, metadata=doc("folder: directory of masks with the same file stems as the images"))
    val_images_dir: str | None = field(
        default=None, metadata=doc("folder: validation images (None: val_fraction of the training files)"))
    val_masks_dir: str | None = field(default=None, metadata=doc("folder: validation masks"))
    test_images_dir: str | None = field(
        default=None, metadata=doc("folder: test images; training ends by scoring best.ckpt on them"))
    test_masks_dir: str | None = field(default=None, metadata=doc("folder: test masks"))
    folder: FolderOptions = field(default_factory=FolderOptions, metadata=doc("how masks encode classes"))
    val_fraction: float = field(
        default=0.2, metadata=doc("folder without a val split, pets: share of training files held out (seeded)"))
    split_scheme: str = field(
        default="official", metadata=doc("pets: official trainval/test lists or random_80_20 as in seed 000"))
    image_size: Any = field(
        default=128, metadata=doc("int (square), [H, W], or null (each file's own size; pair it with crop_size)"))
    keep_aspect: bool = field(
        default=False, metadata=doc("letterbox into image_size (padding ignored) instead of stretching"))
    crop_size: Any = field(
        default=None,
        metadata=doc("int or [h, w]: train on random crops of this size (padded with ignore where smaller)"),
    )
    train_length: int | None = field(
        default=None, metadata=doc("shapes: training samples per epoch; above 800 adds fresh procedural ones"))
    val_length: int | None = field(default=None, metadata=doc("shapes: validation samples (default 100)"))

    def check(self) -> None:
        """Raise a `ConfigError` naming the first invalid value (folder options included)."""
        for name, choices in (("dataset", DATASETS), ("layout", LAYOUTS), ("split_scheme", SPLIT_SCHEMES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"config key {name!r} is {getattr(self, name)!r}; valid values: {', '.join(choices)}")
        for name in ("image_size", "crop_size"):
            value = getattr(self, name)
            pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(is_int(v) and v > 0 for v in value)
            if value is not None and not ((is_int(value) and value > 0) or pair):
                raise ConfigError(f"config key {name!r} must be a positive int, [H, W] or null, got {value!r}")
        for name in ("train_length", "val_length"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"config key {name!r} must be positive, got {value!r}")
        if self.split_lists is not None:
            lists = self.split_lists
            if not isinstance(lists, Mapping) or "train" not in lists or not set(lists) <= set(SPLIT_NAMES) or not all(
                    isinstance(path, str) and path.strip() for path in lists.values()):
                raise ConfigError(f"config key 'split_lists' must map train (and optionally val, test) to list "
                                  f"files, e.g. {{train: splits/train.txt, val: splits/val.txt}}; got {lists!r}")
            if self.layout not in ("auto", "lists") or self.data_root is None:
                raise ConfigError("config key 'split_lists' needs data_root (the folder the listed paths are "
                                  f"relative to) and layout lists or auto, got layout {self.layout!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"config key 'val_fraction' must be in [0, 1), got {self.val_fraction!r}")
        self.folder.check()

    def image_hw(self) -> tuple[int, int] | None:
        """`image_size` as (H, W); None when every file keeps its own size."""
        return None if self.image_size is None else as_hw(self.image_size)

    def crop_hw(self) -> tuple[int, int] | None:
        """`crop_size` as (H, W), or None."""
        return None if self.crop_size is None else as_hw(self.crop_size)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> DataOptions:
        """The options held by a flat mapping of config keys (a checkpoint's saved config); other keys are
        ignored and missing ones take their defaults."""
        folder = FolderOptions(**{key: values[key] for key in FOLDER_FIELDS if key in values})
        own = {key: values[key] for key in DATA_FIELDS if key in values and key != "folder"}
        options = cls(**own, folder=folder)
        options.check()
        return options

    def to_flat(self) -> dict[str, Any]:
        """Plain values by flat config key: these options' fields with the folder options' in place of `folder`."""
        values: dict[str, Any] = {}
        for key in DATA_FIELDS:
            if key == "folder":
                values.update(dataclasses.asdict(self.folder))
            else:
                values[key] = getattr(self, key)
        return values


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """`224` -> `(224, 224)`; `(H, W)` unchanged."""
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


FOLDER_FIELDS = tuple(f.name for f in dataclasses.fields(FolderOptions))
DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataOptions))
