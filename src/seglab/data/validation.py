"""`seglab data check`: read every image/mask pair of a folder dataset and report every problem at once.

The checks reuse the readers of the datasets (`seglab.data.files`), so each problem reported here is the one
the datasets would raise, with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seglab.data.files import FileProblem, load_rgb, size_mismatch
from seglab.data.folder import FolderOptions, merge_options


@dataclass
class CheckReport:
    """What `check_folders` found: the problems (one per file and kind) and the class pixel counts of good pairs."""

    pairs: int = 0  # image/mask pairs found by stem
    good_pairs: int = 0  # pairs that passed every check
    problems: list[FileProblem] = field(default_factory=list)
    class_names: tuple[str, ...] = ()
    class_pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0
    skipped: int = 0  # unpaired files left out with allow_unpaired

    @property
    def ok(self) -> bool:
        return not self.problems

    def frequencies(self) -> dict[str, float]:
        """Fraction of labelled (non-ignored) pixels per class."""
        total = max(sum(self.class_pixels), 1)
        return {name: count / total for name, count in zip(self.class_names, self.class_pixels, strict=True)}

    def summary(self) -> str:
        """The report as text: every problem on its own line, then totals and class frequencies."""
        lines = [f"problem [{p.kind}] {p}" for p in self.problems]
        lines.append(f"{self.pairs} pairs found, {self.good_pairs} without problems, {len(self.problems)} problems")
        if self.skipped:
            lines.append(f"{self.skipped} unpaired files skipped (allow_unpaired)")
        if self.good_pairs:
            freq = ", ".join(f"{name} {share:.1%}" for name, share in self.frequencies().items())
            lines.append(f"class pixel frequencies (good pairs): {freq}")
            labelled = sum(self.class_pixels)
            if self.ignored_pixels:
                share = self.ignored_pixels / (self.ignored_pixels + labelled)
                lines.append(f"ignored pixels: {self.ignored_pixels:,} ({share:.1%})")
                if share > 0.5:
                    # Typical of 0/255 masks read as indices: 255 is the ignore index, not a class.
                    lines.append(
                        "warning: most pixels are ignored; if the ignore value is really a class, pass a value map "
                        "(e.g. --value-map 0:0,255:1)"
                    )
            empty = [name for name, count in zip(self.class_names, self.class_pixels, strict=True) if count == 0]
            if empty:
                lines.append(f"warning: no pixel of class {', '.join(empty)} in any mask")
        return "\n".join(lines)


def check_folders(
    images_dir: Path | str,
    masks_dir: Path | str,
    *,
    options: FolderOptions | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    value_map: Mapping[int, int] | None = None,
    palette: Mapping[int, Sequence[int] | str] | None = None,
    ignore_index: int = 255,
    mask_suffix: str = "",
    image_suffix: str = "",
    recursive: bool = False,
    allow_unpaired: bool = False,
) -> CheckReport:
    """Check every file under two folders. Problems found: unpaired or ambiguous files, empty, unreadable or
    truncated files, absurd dimensions, 16-bit or multi-channel masks where indices are expected, mask values
    outside the classes, and image/mask size mismatches.

    `options` (a `FolderOptions`) or the separate keywords say how masks are read and files paired, as for
    `FolderDataset`; with `allow_unpaired` unpaired files are counted as skipped, not as problems."""
    options = merge_options(
        options,
        num_classes=num_classes,
        class_names=class_names,
        value_map=value_map,
        palette=palette,
        ignore_index=ignore_index,
        mask_suffix=mask_suffix,
        image_suffix=image_suffix,
        recursive=recursive,
        allow_unpaired=allow_unpaired,
    )
    decoder = options.decoder()
    names = options.resolved_class_names()
    ignore_index = options.ignore_index
    pairing = options.pair(images_dir, masks_dir)
    report = CheckReport(pairs=len(pairing.pairs), class_names=names, class_pixels=[0] * len(names))
    if options.allow_unpaired:
        report.skipped = len(pairing.images_without_mask) + len(pairing.masks_without_image)
    else:
        for path in pairing.images_without_mask:
            report.problems.append(FileProblem(path, "unpaired", _missing_mask(path, masks_dir, options)))
        for path in pairing.masks_without_image:
            report.problems.append(FileProblem(path, "unpaired", f"has no image with the same stem in {images_dir}"))
    for group in pairing.duplicates:
        report.problems.append(
            FileProblem(
                group[0],
                "duplicate-stem",
                f"shares its stem with {', '.join(p.name for p in group[1:])}; keep one file per stem",
            )
        )
    counts = np.zeros(len(names), dtype=np.int64)
    for image_path, mask_path in pairing.pairs:
        found = []
        image_shape = mask_shape = None
        try:
            image_shape = load_rgb(image_path).shape[:2]
        except FileProblem as problem:
            found.append(problem)
        mask = None
        try:
            mask = decoder.read(mask_path)
            mask_shape = mask.shape
        except FileProblem as problem:
            found.append(problem)
        if image_shape is not None and mask_shape is not None and image_shape != mask_shape:
            found.append(size_mismatch(mask_path, mask_shape, image_path, image_shape))
        report.problems.extend(found)
        if not found and mask is not None:
            report.good_pairs += 1
            labelled = mask[mask != ignore_index]
            counts += np.bincount(labelled.ravel(), minlength=len(names))
            report.ignored_pixels += int(mask.size - labelled.size)
    report.class_pixels = counts.tolist()
    return report


def _missing_mask(image: Path, masks_dir: Path | str, options: FolderOptions) -> str:
    if options.image_suffix and not image.stem.endswith(options.image_suffix):
        return f"does not end with the image suffix {options.image_suffix!r}, so no mask can pair with it"
    stem = image.stem.removesuffix(options.image_suffix) + options.mask_suffix
    return f"has no mask with the stem {stem!r} in {masks_dir}"
