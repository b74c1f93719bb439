"""`AnnotationDataset`: the images of one split of an annotation export with their rasterised class masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.annotations.sources import AnnotationSplit, MaskCache, MaskRules, image_array
from seglab.data.classes import default_palette
from seglab.data.files import FileProblem, require_labelled
from seglab.data.options import FolderOptions, as_hw
from seglab.data.resize import resize_arrays, to_tensors
from seglab.errors import DataError


class AnnotationDataset(Dataset):
    """Images and the masks their annotations draw: image float32 `(3, H, W)` in [0, 1], mask int64 `(H, W)`,
    like `FolderDataset`. `split` names the annotation files (`seglab.data.layouts.find_splits` finds them);
    classes come from `options.class_names` (labels matched by name) or from the export's own categories / labels.
    Each mask is rasterised once per version of its annotation file into `cache` (a `MaskCache`, by default under
    $SEGLAB_CACHE); `crowd` is the crowd rule ("ignore" or "class")."""

    def __init__(self, split: AnnotationSplit, options: FolderOptions = FolderOptions(),  # noqa: B008 (frozen)
                 *, size: int | tuple[int, int] | None = None, keep_aspect: bool = False, crowd: str = "ignore",
                 cache_folder: Path | str | None = None) -> None:
        self.split = split
        self.images = split.images()
        if not self.images:
            raise DataError(f"{split.describe()} names no annotated image; check the export (or the subset names)")
        classes = split.class_table(options.class_names)
        self.rules = MaskRules(classes, options.ignore_index, crowd)
        self.cache = MaskCache(self.rules, cache_folder)
        self.class_names = classes.names
        self.num_classes = len(classes.names)
        self.ignore_index = options.ignore_index
        self.palette = default_palette(self.num_classes)
        self.size = None if size is None else as_hw(size)
        self.keep_aspect = keep_aspect
        # (image file, annotation file) per item: what `warn_if_shared` and the messages name.
        self.pairs = [(image.image_path or image.source, image.source) for image in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The item at `index` as numpy arrays at the image's size: uint8 `(H, W, 3)` and int64 `(H, W)`."""
        image = self.images[index]
        rgb = image_array(image)
        mask = self.cache.mask(image, rgb.shape[:2])
        return rgb, require_labelled(mask, image.source, self.ignore_index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask = self.load(index)
        if self.size is not None:
            rgb, mask = resize_arrays(rgb, mask, self.size, keep_aspect=self.keep_aspect,
                                      ignore_index=self.ignore_index)
        return to_tensors(rgb, mask)

    def problems(self, action: str = "training") -> list[FileProblem]:
        """Check every image and object and fill the mask cache (`prepare_annotation_cache`); the problems that
        stop `action`."""
        from seglab.data.annotations.sources import prepare_annotation_cache

        return prepare_annotation_cache(self.images, self.rules, cache=self.cache, action=action)
