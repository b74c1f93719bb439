"""Pairing image files with mask files by stem: the one rule that training, `seglab data check`, `evaluate`
and `predict --masks` use.

Pairing is by stem (`cat_01.jpg` <-> `cat_01.png`), never by sort order: real folders are not named in order,
and one missing mask would silently shift every later pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from seglab.data.files import IMAGE_EXTENSIONS, FileProblem, display_path, is_listed_file, list_image_files, natural_key
from seglab.data.options import FolderOptions
from seglab.errors import DataError


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


def group_by_stem(paths: Iterable[Path], suffix: str, *, skip_others: bool) -> dict[str, list[Path]]:
    """Files grouped by stem after removing `suffix`. A file without the suffix is skipped (`skip_others`: a
    mask folder's other files, e.g. Cityscapes' `_gtFine_color.png`) or given a stem no partner can have."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        stem = path.stem
        if suffix:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
            elif skip_others:
                continue
            else:
                stem = "\0" + stem  # reported as unpaired
        groups.setdefault(stem, []).append(path)
    return groups


def pair_folders(images_dir: Path | str, masks_dir: Path | str, options: FolderOptions) -> Pairing:
    """The image/mask pairs of two folders under `options`' pairing rules (suffixes, sub-folders)."""
    return pair_files(images_dir, masks_dir, mask_suffix=options.mask_suffix, image_suffix=options.image_suffix,
                      recursive=options.recursive)


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
    image_files = list_images(images_dir, recursive=recursive)
    images = group_by_stem(image_files, image_suffix, skip_others=False)
    masks = group_by_stem(list_images(masks_dir, recursive=recursive), mask_suffix, skip_others=True)
    # A stem shared by several files is reported once as a duplicate, and its partner is not called unpaired.
    duplicates = [sorted(group) for group in [*images.values(), *masks.values()] if len(group) > 1]
    shared = [s for s in images.keys() & masks.keys() if len(images[s]) == len(masks[s]) == 1]

    def by_name(groups) -> list[Path]:
        return sorted(
            (path for group in groups for path in group if len(group) == 1), key=lambda p: natural_key(p.name)
        )

    return Pairing(
        pairs=[(images[s][0], masks[s][0]) for s in sorted(shared, key=natural_key)],
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
