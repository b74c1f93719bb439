"""`seglab data convert SOURCE --to masks OUT`: an annotation export written as files, for users who want them:
`OUT/images/{split}/` (the images, copied), `OUT/masks/{split}/<stem>.png` (palette PNGs of class indices, drawn by
the same rules and cache as training), `OUT/classes.txt` (one name per line, in index order) and `OUT/seglab.yaml`
(a training config reading OUT with `layout: images_masks`)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.atomic import atomic_path, copy_atomically, write_text_atomically
from seglab.data.annotations.sources import WARNING_TAGS, MaskCache, MaskRules, check_image
from seglab.data.classes import default_palette, indexed_image
from seglab.data.files import FileProblem
from seglab.data.layouts import DatasetLayout
from seglab.data.options import FolderOptions
from seglab.errors import ConfigError


@dataclass
class ConversionSummary:
    """What `convert_to_masks` wrote: pairs per split, the class names, and the images left out with their
    problems (missing images, unknown labels, size mismatches)."""

    written: dict[str, int] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    problems: list[FileProblem] = field(default_factory=list)
    warnings: list[FileProblem] = field(default_factory=list)


def convert_to_masks(layout: DatasetLayout, out: Path | str, options: FolderOptions = FolderOptions(),  # noqa: B008
                     *, crowd: str = "ignore", echo: Callable[[str], None] = print) -> ConversionSummary:
    """Write every annotated image of `layout` (an annotation layout from `find_splits`) as image + palette PNG
    mask under `out`, with the class list and a ready training config. Images with problems are left out and
    listed in the summary."""
    out = Path(out)
    splits = {name: folders.annotations for name, folders in layout.splits.items() if folders.annotations}
    if len(splits) != len(layout.splits):
        raise ConfigError(f"{layout.root} is a {layout.name} dataset, whose masks are files already; "
                          "convert reads annotation exports (coco, labelme, cvat, labelstudio)")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; convert into a new folder")
    first = next(iter(splits.values()))
    classes = first.class_table(options.class_names)
    rules = MaskRules(classes, options.ignore_index, crowd)
    cache = MaskCache(rules)
    palette = default_palette(len(classes.names))
    summary = ConversionSummary(class_names=classes.names)
    for split, export in splits.items():
        used: set[str] = set()
        count = 0
        for number, image in enumerate(export.images()):
            found, size = check_image(image, classes)
            summary.warnings += [p for p in found if p.kind in WARNING_TAGS]
            errors = [p for p in found if p.kind not in WARNING_TAGS]
            if errors or size is None:
                summary.problems += errors
                continue
            source = image.image_path
            stem = Path(source).stem if source is not None else image.source.stem
            if stem in used:
                stem = f"{stem}_{number}"
            used.add(stem)
            if source is not None:
                copy_atomically(source, out / "images" / split / f"{stem}{source.suffix.lower()}")
            else:
                with Image.open(io.BytesIO(image.image_data or b"")) as embedded, \
                        atomic_path(out / "images" / split / f"{stem}.png") as temporary:
                    embedded.save(temporary, format="PNG")
            mask = cache.mask(image, size)
            if mask.max(initial=0) > 255:
                raise ConfigError("more than 255 classes cannot be written as 8-bit PNG masks")
            with atomic_path(out / "masks" / split / f"{stem}.png") as temporary:
                indexed_image(mask.astype(np.uint8), palette).save(temporary)
            count += 1
        summary.written[split] = count
        echo(f"{split}: {count} image/mask pairs written")
    write_text_atomically(out / "classes.txt", "\n".join(classes.names) + "\n")
    names = ", ".join(_yaml_string(name) for name in classes.names)
    write_text_atomically(out / "seglab.yaml", (
        f"# Written by `seglab data convert` from {layout.root} ({layout.name} export): palette PNG masks of class\n"
        f"# indices in masks/, images in images/. Train with: seglab train {out / 'seglab.yaml'}\n"
        f"name: {_yaml_string(out.name or 'converted')}\n"
        "dataset: folder\n"
        f"data_root: {_yaml_string(str(out.resolve()))}\n"
        "layout: images_masks\n"
        f"class_names: [{names}]\n"
        f"ignore_index: {options.ignore_index}\n"))
    return summary


def _yaml_string(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a valid YAML scalar, quotes and all
