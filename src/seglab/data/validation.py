"""`seglab data check`: read every image/mask pair of a folder dataset and report every problem at once.

The checks reuse the readers of the datasets (`seglab.data.files`), so each problem reported here is the one
the datasets would raise, with the same message. Training and `seglab evaluate` run the same check on their
datasets before the first step (`refuse_bad_files`), and a file that goes bad later stops training with its
name and tag (`ReportBadFiles`), never a traceback from inside a DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset, default_collate

from seglab.data.classes import class_pixel_counts
from seglab.data.files import FileProblem, MaskDecoder, load_rgb, require_labelled, size_mismatch
from seglab.data.folder import FolderDataset
from seglab.data.options import FolderOptions
from seglab.data.pairing import Pairing, no_images, pair_folders
from seglab.data.protocols import dataset_length
from seglab.errors import ConfigError, DataError


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
    # Annotated objects drawn clipped or left out (`seglab.data.annotations.sources.WARNING_TAGS`): named, but
    # training goes on with them.
    warnings: list[FileProblem] = field(default_factory=list)

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
        lines += [f"warning [{p.kind}] {p}" for p in self.warnings]
        lines.append(f"{self.pairs} pairs found, {self.good_pairs} without problems, {len(self.problems)} problems"
                     + (f", {len(self.warnings)} warnings" if self.warnings else ""))
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


def check_folders(images_dir: Path | str, masks_dir: Path | str | None,
                  options: FolderOptions = FolderOptions(),  # noqa: B008 (frozen default)
                  *, pairing: Pairing | None = None) -> CheckReport:
    """Check every file under two folders. Problems found: an images folder without images, unpaired or
    ambiguous files, missing, unreadable (permissions, link loops), empty, non-image or truncated files, absurd
    dimensions, 16-bit or multi-channel masks where indices are expected, mask values or colours outside the
    classes, masks that are all ignore, and image/mask size mismatches (`seglab.data.files.PROBLEM_TAGS`).

    `options` say how masks are read and files paired, as for `FolderDataset`; with `allow_unpaired` unpaired
    files are counted as skipped, not as problems. `pairing` gives the pairs explicitly (a split list file's,
    whose bad lines are problems too) instead of pairing the two folders."""
    decoder = MaskDecoder.from_options(options)
    names = options.resolved_class_names()
    ignore_index = options.ignore_index
    if pairing is None:
        if masks_dir is None:
            raise ConfigError(f"checking {images_dir} needs a mask folder, or a split list that names each mask")
        pairing = pair_folders(images_dir, masks_dir, options)
    report = CheckReport(pairs=len(pairing.pairs), class_names=names, class_pixels=[0] * len(names))
    report.problems.extend(pairing.problems)
    if not pairing.image_count and not pairing.problems:
        report.problems.append(no_images(images_dir, options))
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
        found, mask = check_pair(image_path, mask_path, decoder)
        report.problems.extend(found)
        if not found and mask is not None:
            report.good_pairs += 1
            labelled = class_pixel_counts(mask, len(names), ignore_index)
            counts += labelled
            report.ignored_pixels += int(mask.size - labelled.sum())
    report.class_pixels = counts.tolist()
    return report


def check_annotations(split: Any, options: FolderOptions = FolderOptions(),  # noqa: B008 (frozen default)
                      *, crowd: str = "ignore") -> CheckReport:
    """`check_folders` for one split of an annotation export (an `AnnotationSplit`): every image and object, each
    problem naming the annotation file, the image entry and the object id (missing or unreadable image, image size
    different from the annotation's, unknown label are problems; a shape that cannot be drawn or reaches outside
    the image is a warning). The masks of good images are rasterised into the cache and counted."""
    from seglab.data.annotations.sources import WARNING_TAGS, MaskCache, MaskRules, check_image

    try:
        images = split.images()
        classes = split.class_table(options.class_names)
    except FileProblem as problem:
        return CheckReport(problems=[problem])
    cache = MaskCache(MaskRules(classes, options.ignore_index, crowd))
    report = CheckReport(pairs=len(images), class_names=classes.names, class_pixels=[0] * len(classes.names))
    counts = np.zeros(len(classes.names), dtype=np.int64)
    for image in images:
        found, size = check_image(image, classes)
        errors = [p for p in found if p.kind not in WARNING_TAGS]
        report.problems += errors
        report.warnings += [p for p in found if p.kind in WARNING_TAGS]
        if size is not None and not errors:
            mask = cache.mask(image, size)
            report.good_pairs += 1
            labelled = class_pixel_counts(mask, len(classes.names), options.ignore_index)
            counts += labelled
            report.ignored_pixels += int(mask.size - labelled.sum())
    report.class_pixels = counts.tolist()
    return report


def check_pair(image_path: Path, mask_path: Path, decoder: MaskDecoder) -> tuple[list[FileProblem], Any]:
    """Every problem of one image/mask pair (both files are read, so both can be reported), and the decoded
    mask when there is none."""
    found = []
    image_shape = mask = None
    try:
        image_shape = load_rgb(image_path).shape[:2]
    except FileProblem as problem:
        found.append(problem)
    try:
        mask = require_labelled(decoder.read(mask_path), mask_path, decoder.ignore_index)
    except FileProblem as problem:
        found.append(problem)
    if image_shape is not None and mask is not None and image_shape != mask.shape:
        found.append(size_mismatch(mask_path, mask.shape, image_path, image_shape))
    return found, (mask if not found else None)


class BadFiles(DataError):
    """Files of a dataset that cannot be used, found before training or evaluation started; `problems` lists them."""

    def __init__(self, problems: Sequence[FileProblem], action: str) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  [{p.kind}] {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} bad file(s) in the data, so {action} did not run (nothing was written):\n"
            f"{lines}\n"
            "fix or remove them (`seglab data check` lists the same problems with the same tags)"
        )


def file_pairs(dataset: Dataset) -> tuple[list[tuple[Path, Path]], MaskDecoder] | None:
    """The (image, mask) files a dataset reads, through `Subset`s and wrappers that keep it as `.dataset`, and
    the decoder of its masks; None for datasets that read no files this way (shapes, Oxford-IIIT Pet)."""
    if isinstance(dataset, FolderDataset):
        return dataset.pairs, dataset.decoder
    inner = getattr(dataset, "dataset", None)
    found = None if inner is None else file_pairs(inner)
    if found is not None and isinstance(dataset, Subset):
        return [found[0][i] for i in dataset.indices], found[1]
    return found


def annotation_datasets(dataset: Dataset) -> list[Any]:
    """The `AnnotationDataset`s a dataset reads, through `Subset`s and wrappers that keep it as `.dataset`."""
    from seglab.data.annotations.dataset import AnnotationDataset

    while not isinstance(dataset, AnnotationDataset) and (inner := getattr(dataset, "dataset", None)) is not None:
        dataset = inner
    return [dataset] if isinstance(dataset, AnnotationDataset) else []


def refuse_bad_files(datasets: Iterable[Dataset], action: str) -> None:
    """Read every pair of the folder datasets among `datasets` as `seglab data check` does, and raise
    `BadFiles` listing every problem, so that `action` ("training", "evaluation") stops before its first step
    instead of at the first bad file, hours in. Pairs shared by several datasets are read once. Annotation
    exports are checked object by object and their masks rasterised into the cache here
    (`seglab.data.annotations.sources.prepare_annotation_cache`)."""
    problems: list[FileProblem] = []
    seen: set[tuple[Path, Path]] = set()
    seen_exports: set[int] = set()
    for dataset in datasets:
        exports = annotation_datasets(dataset)
        if exports:
            # Checks every object and rasterises each mask into the cache, once per annotation file version.
            for export in exports:
                if id(export) not in seen_exports:
                    seen_exports.add(id(export))
                    problems += export.problems(action)
            continue
        found = file_pairs(dataset)
        if found is None:
            continue
        pairs, decoder = found
        for pair in pairs:
            if pair not in seen:
                seen.add(pair)
                problems += check_pair(*pair, decoder)[0]
    if problems:
        raise BadFiles(problems, action)


@dataclass(frozen=True)
class BadSample:
    """What `ReportBadFiles` returns instead of an item whose file cannot be read: it travels from a DataLoader
    worker to the training process as data, where `raise_bad_sample` raises its problem unchanged."""

    problem: FileProblem


class ReportBadFiles(Dataset):
    """`dataset` whose file problems come back as `BadSample` items instead of exceptions: an exception raised
    in a DataLoader worker reaches the training process as a RuntimeError holding a traceback, losing the file's
    name and tag. Use with `collate_or_report` and `raise_bad_sample`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return dataset_length(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except FileProblem as problem:
            return BadSample(problem)


def collate_or_report(items: list[Any]) -> Any:
    """`default_collate`, except that a batch holding a `BadSample` becomes that `BadSample`."""
    bad = next((item for item in items if isinstance(item, BadSample)), None)
    return bad if bad is not None else default_collate(items)


def raise_bad_sample(batch: Any) -> Any:
    """`batch` as it is, or for a `BadSample` its `FileProblem`, saying that training stopped at the file."""
    if not isinstance(batch, BadSample):
        return batch
    problem = batch.problem
    raise FileProblem(problem.path, problem.kind, f"{problem.detail}. Training stopped at this file, which passed "
                                                  "the check before the first step and has changed since; fix or "
                                                  "restore it, then continue from the last checkpoint with "
                                                  "`seglab train --resume RUN_DIR`")


def _missing_mask(image: Path, masks_dir: Path | str | None, options: FolderOptions) -> str:
    if options.image_suffix and not image.stem.endswith(options.image_suffix):
        return f"does not end with the image suffix {options.image_suffix!r}, so no mask can pair with it"
    stem = image.stem.removesuffix(options.image_suffix) + options.mask_suffix
    return f"has no mask with the stem {stem!r} in {masks_dir}"
