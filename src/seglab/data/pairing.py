"""Pairing image files with mask files by stem: the one rule that training, `seglab data check`, `evaluate`
and `predict --masks` use.

Pairing is by stem (`cat_01.jpg` <-> `cat_01.png`), never by sort order: real folders are not named in order,
and one missing mask would silently shift every later pair.
"""

from __future__ import annotations

import os
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
    image_count: int = 0  # image files found in the images folder (entries of a list file), paired or not
    problems: list[FileProblem] = field(default_factory=list)  # a split list file's bad lines, each naming its line

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
        lines.extend(f"[{problem.kind}] {problem}" for problem in self.problems[:limit])
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problems in the list")
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


def read_list_file(list_file: Path) -> list[tuple[int, list[str]]]:
    """The entries of a split list file as (line number, fields): blank lines and `#` comments (whole lines, or
    after whitespace) left out."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{list_file}: cannot read this split list ({error}); check the path (data_root, "
                        "split_lists) and that it is a UTF-8 text file") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        comment = next((i for i, part in enumerate(fields) if part.startswith("#")), len(fields))
        if fields[:comment]:
            entries.append((number, fields[:comment]))
    return entries


def pair_list(list_file: Path | str, root: Path | str, masks_dir: Path | str | None,
              options: FolderOptions) -> Pairing:
    """The pairs a split list file names, one line each: an image path relative to `root`, optionally followed
    by whitespace and its mask's path (mmseg's split files, many published datasets). A line naming only the
    image gets its mask by the folders' rule, stem and `mask_suffix`, in `masks_dir`. Every bad line (a path
    naming no file, an image without a mask, an image or mask listed twice) is a problem naming the list file and
    line, in `Pairing.problems`, so that `seglab data check` lists them all and the datasets refuse them."""
    list_file, root = Path(list_file), Path(root)
    entries = read_list_file(list_file)
    pairing = Pairing(image_count=len(entries))
    problems = pairing.problems
    if not entries:
        problems.append(FileProblem(list_file, "no-images", "this split list names no image (only blank lines and "
                                                            "comments); list one image path per line"))
    masks: dict[str, list[Path]] | None = None  # the mask folder by stem, read at the first line that needs it
    seen: dict[str, int] = {}
    for number, fields in entries:
        where = f"line {number}"
        if len(fields) > 2:
            problems.append(FileProblem(list_file, "unreadable", f"{where} has {len(fields)} fields; write an image "
                                                                 "path, optionally followed by its mask's path "
                                                                 "(paths with spaces cannot be listed)"))
            continue
        image = root / fields[0]
        if not image.is_file():
            problems.append(FileProblem(list_file, "missing", f"{where}: {fields[0]} names no file under {root}; "
                                                              "fix the line or data_root"))
            continue
        if len(fields) == 2:
            mask = root / fields[1]
            if not mask.is_file():
                problems.append(FileProblem(list_file, "missing", f"{where}: the mask {fields[1]} names no file "
                                                                  f"under {root}; fix the line or data_root"))
                continue
        else:
            if masks_dir is None:
                problems.append(FileProblem(list_file, "unpaired", f"{where} names only the image {fields[0]} and "
                                                                   f"{root} has no mask folder (labels/, masks/ or "
                                                                   "annotations/); add one or the mask's path"))
                continue
            if masks is None:
                masks = group_by_stem(list_images(masks_dir, recursive=options.recursive), options.mask_suffix,
                                      skip_others=True)
            stem = image.stem.removesuffix(options.image_suffix) if image.stem.endswith(options.image_suffix) else None
            found = masks.get(stem, []) if stem is not None else []
            if len(found) != 1:
                wanted = f"the stem {stem + options.mask_suffix!r}" if stem is not None else "its stem"
                detail = (f"several masks share {wanted} in {masks_dir}: " + ", ".join(p.name for p in found)
                          if found else f"no mask with {wanted} in {masks_dir}")
                if stem is None:
                    detail = f"the image does not end with the image suffix {options.image_suffix!r}"
                problems.append(FileProblem(list_file, "duplicate-stem" if found else "unpaired",
                                            f"{where}: {fields[0]}: {detail}"))
                continue
            mask = found[0]
        keys = (os.path.abspath(image), os.path.abspath(mask))  # "images/./a.jpg" is "images/a.jpg"
        repeated = [seen[key] for key in keys if key in seen]
        if repeated:
            problems.append(FileProblem(list_file, "duplicate-stem", f"{where} repeats a file of line {repeated[0]} "
                                                                     f"({fields[0]}); list each pair once"))
            continue
        seen.update(dict.fromkeys(keys, number))
        pairing.pairs.append((image, mask))
    return pairing
