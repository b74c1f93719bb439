"""Users' own data: a folder of images and a folder of masks, paired by stem (`seglab.data.pairing`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.classes import class_pixel_counts, default_palette
from seglab.data.files import MaskDecoder, load_rgb, require_labelled, size_mismatch
from seglab.data.options import FolderOptions, as_hw
from seglab.data.pairing import Pairing, no_images, pair_folders
from seglab.data.resize import resize_arrays, to_tensors
from seglab.errors import ConfigError, DataError


class FolderDataset(Dataset):
    """Images and masks from two folders, paired by stem: image float32 `(3, H, W)` in [0, 1], mask int64 `(H, W)`.

    `options` (a `FolderOptions`) says how masks encode classes and how files pair up.
    Masks hold class indices, or colours decoded with `palette` (class -> colour), or values decoded with
    `value_map` (stored value -> class, e.g. `{0: 0, 255: 1}`); either may send void to `ignore_index`. Classes
    come from `class_names`, else `num_classes`, else the largest class the value map / palette names.
    `size` (int or (H, W)) resizes every sample (image antialiased bilinear, mask nearest), letterboxed
    with `keep_aspect=True`; `size=None` keeps the files' size. Unpaired files raise a `DataError` listing
    them unless `allow_unpaired=True`, which skips them. `pairing` gives the pairs explicitly (a split list
    file's, `SplitFolders.pairing`) instead of pairing the two folders; its problems are refused the same way.
    """

    def __init__(
        self,
        images_dir: Path | str,
        masks_dir: Path | str | None,
        options: FolderOptions = FolderOptions(),  # noqa: B008 (frozen: one shared default is safe)
        *,
        size: int | tuple[int, int] | None = None,
        keep_aspect: bool = False,
        pairing: Pairing | None = None,
    ) -> None:
        self.options = options
        # No mask folder: a split list file whose lines name each mask (`pairing`).
        self.images_dir, self.masks_dir = Path(images_dir), None if masks_dir is None else Path(masks_dir)
        self.decoder = MaskDecoder.from_options(options)
        self.class_names = options.resolved_class_names()
        self.num_classes = len(self.class_names)
        self.ignore_index = options.ignore_index
        self.size = None if size is None else as_hw(size)
        self.keep_aspect = keep_aspect
        if pairing is None:
            if self.masks_dir is None:
                raise ConfigError(f"images in {self.images_dir} need a mask folder, or a split list naming each mask")
            pairing = pair_folders(self.images_dir, self.masks_dir, options)
        if not pairing.image_count and not pairing.problems:  # an empty list file is one of the list's problems
            raise no_images(self.images_dir, options)
        if pairing.problems:
            raise DataError(f"the split list does not name usable pairs:\n{pairing.report()}\nfix these lines "
                            "(`seglab data check` lists every problem)")
        unpaired = pairing.images_without_mask or pairing.masks_without_image
        if pairing.duplicates or (unpaired and not options.allow_unpaired):
            raise DataError(
                f"{self.images_dir} and {self.masks_dir} do not pair up one to one by file name:\n"
                f"{pairing.report()}\nrename or remove these files (or pass allow_unpaired=True to skip unpaired ones)"
            )
        if not pairing.pairs:
            raise DataError(
                f"no image in {self.images_dir} has a mask with the same name in {self.masks_dir}; check the folders "
                "(and the mask / image suffix, if files are named like 'x_mask.png', or recursive for sub-folders)"
            )
        self.pairs = pairing.pairs
        self.unpaired = pairing

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """Display colours per class: the masks' own palette when it names every class, else seglab's default."""
        colours = self.options.palette_colours()
        if not colours or any(index not in colours for index in range(self.num_classes)):
            return default_palette(self.num_classes)
        return tuple(colours[index] for index in range(self.num_classes))

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The pair at `index` as numpy arrays at the files' size: uint8 `(H, W, 3)` and int64 `(H, W)`."""
        image_path, mask_path = self.pairs[index]
        rgb = load_rgb(image_path)
        mask = self.decoder.read(mask_path)
        if rgb.shape[:2] != mask.shape:
            raise size_mismatch(mask_path, mask.shape, image_path, rgb.shape)
        return rgb, require_labelled(mask, mask_path, self.ignore_index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask_array = self.load(index)
        if self.size is not None:
            rgb, mask_array = resize_arrays(
                rgb, mask_array, self.size, keep_aspect=self.keep_aspect, ignore_index=self.ignore_index
            )
        return to_tensors(rgb, mask_array)

    def class_frequencies(self) -> dict[str, float]:
        """Fraction of labelled pixels per class over the whole dataset (reads every mask once)."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for _, mask_path in self.pairs:
            counts += class_pixel_counts(self.decoder.read(mask_path), self.num_classes, self.ignore_index)
        total = max(int(counts.sum()), 1)
        return {name: float(c) / total for name, c in zip(self.class_names, counts, strict=True)}
