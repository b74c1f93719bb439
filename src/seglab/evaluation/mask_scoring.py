"""`seglab predict --masks`: each written prediction scored against the mask of its stem, counted by the same
`ScoreTally` as `seglab evaluate`, with per_image.csv and image / prediction / truth grids."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from seglab.data.files import FileProblem, MaskDecoder, display_path, require_labelled, size_mismatch
from seglab.data.options import FolderOptions
from seglab.data.pairing import group_by_stem, list_images
from seglab.errors import DataError
from seglab.evaluation.plots import save_triplet_grid, thumbnail
from seglab.evaluation.scores import ScoreTally
from seglab.evaluation.writers import write_per_image_csv
from seglab.inference.spec import InferenceSpec

GRID_ROWS = 8  # image / prediction / truth rows per grid PNG, as in the seed's figures


class MaskScorer:
    """Called with (input file, image, predicted labels) after each prediction is written; finds the input's mask
    in `masks_dir` by the one pairing rule (stems with `image_suffix` / `mask_suffix` removed, sub-folders with
    `recursive`) and scores it. Inputs without a usable mask become `failures`."""

    def __init__(self, masks_dir: str | Path, masks_read: FolderOptions, spec: InferenceSpec) -> None:
        self.masks_dir = Path(masks_dir)
        if not self.masks_dir.is_dir():
            raise DataError(f"--masks {self.masks_dir} is not a folder")
        self.options = dataclasses.replace(masks_read, class_names=list(spec.class_names), num_classes=None,
                                           ignore_index=spec.ignore_index)
        self.decoder = MaskDecoder.from_options(self.options)
        self.masks = group_by_stem(list_images(self.masks_dir, recursive=self.options.recursive),
                                   self.options.mask_suffix, skip_others=True)
        self.spec = spec
        self.tally = ScoreTally(spec.num_classes, spec.ignore_index)
        self.failures: list[FileProblem] = []
        self.grid_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def _mask_of(self, image_path: Path) -> Path | None:
        stem = image_path.stem
        suffix = self.options.image_suffix
        if suffix and not stem.endswith(suffix):
            self.failures.append(FileProblem(image_path, "no-mask", f"does not end with the image suffix {suffix!r}, "
                                             "so no mask pairs with it (the prediction was written, but not scored)"))
            return None
        group = self.masks.get(stem.removesuffix(suffix) if suffix else stem, [])
        if len(group) > 1:
            self.failures.append(FileProblem(group[0], "duplicate-stem", f"shares its stem with "
                                             f"{', '.join(display_path(p) for p in group[1:])}, so it is unclear "
                                             f"which mask belongs to {display_path(image_path)}; keep one"))
            return None
        if not group:
            self.failures.append(FileProblem(image_path, "no-mask", f"no mask with this stem in {self.masks_dir} "
                                             "(the prediction was written, but not scored)"))
            return None
        return group[0]

    def __call__(self, image_path: Path, image: torch.Tensor, prediction: np.ndarray) -> None:
        mask_path = self._mask_of(image_path)
        if mask_path is None:
            return
        try:
            truth = require_labelled(self.decoder.read(mask_path), mask_path, self.decoder.ignore_index)
        except FileProblem as problem:
            self.failures.append(problem)
            return
        if truth.shape != prediction.shape:
            self.failures.append(size_mismatch(mask_path, truth.shape, image_path, prediction.shape,
                                               "the prediction was written, but not scored"))
            return
        self.tally.add(display_path(image_path), prediction, truth)
        self.grid_rows.append(thumbnail(image, prediction, truth))

    def write(self, out: Path) -> None:
        """per_image.csv and grids/grid_NNN.png into `out` (nothing when no image was scored)."""
        if not self.tally.per_image:
            return
        write_per_image_csv(out / "per_image.csv", self.tally.per_image, self.spec.class_names)
        (out / "grids").mkdir(exist_ok=True)
        for number, first in enumerate(range(0, len(self.grid_rows), GRID_ROWS)):
            save_triplet_grid(self.grid_rows[first:first + GRID_ROWS], self.spec.palette, self.spec.class_names,
                              out / "grids" / f"grid_{number:03d}.png")
