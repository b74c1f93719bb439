"""Building a run's datasets from its `DataOptions`, and the wrappers that hold part of a dataset out or crop it.

Both training and `seglab evaluate` build datasets here, so a checkpoint is scored on exactly the split it was
selected on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Subset

from seglab.data.files import upright_size
from seglab.data.folder import FolderDataset
from seglab.data.layouts import SplitFolders, find_splits
from seglab.data.options import DataOptions
from seglab.data.protocols import dataset_length
from seglab.errors import ConfigError

if TYPE_CHECKING:
    from seglab.data.annotations.dataset import AnnotationDataset


def build_datasets(options: DataOptions, *, seed: int = 0, echo: Callable[[str], None] = print
                   ) -> dict[str, Dataset]:
    """{"train", "val", "test"} datasets of `options` ("test" absent where the dataset has no labelled test set);
    `seed` draws procedural data and held-out splits; `echo` receives the dataset layout found under a root."""
    if options.dataset == "shapes":
        from seglab.data.shapes import ShapesDataset

        common = {"size": options.image_size, "seed": seed}
        return {
            "train": ShapesDataset("train", length=options.train_length, **common),
            "val": ShapesDataset("val", length=options.val_length, **common),
            "test": ShapesDataset("test", **common),
        }
    if options.dataset == "pets":
        from seglab.data.pets import OxfordPets

        if options.data_root is None:
            raise ConfigError("dataset 'pets' needs data_root: the folder that holds (or will hold) Oxford-IIIT Pet")
        common = {"split_scheme": options.split_scheme, "size": options.image_size, "seed": seed,
                  "val_fraction": options.val_fraction}
        return {split: OxfordPets(options.data_root, split, **common) for split in ("train", "val", "test")}
    if options.dataset == "folder":
        return folder_datasets(options, seed=seed, echo=echo)
    raise ConfigError(f"unknown dataset {options.dataset!r}")


def folder_splits(options: DataOptions, *, echo: Callable[[str], None] = print) -> dict[str, SplitFolders]:
    """The split folders a folder config names: `images_dir`/`masks_dir` (and `val_`/`test_` ones), or the
    splits found under `data_root` by its `layout`."""
    if options.images_dir:
        masks_dir = None if options.masks_dir is None else Path(options.masks_dir)
        splits = {"train": SplitFolders(Path(options.images_dir), masks_dir)}
        for split in ("val", "test"):
            if getattr(options, f"{split}_images_dir"):
                splits[split] = SplitFolders(getattr(options, f"{split}_images_dir"),
                                             getattr(options, f"{split}_masks_dir"))
        return splits
    if options.data_root is None:
        raise ConfigError("dataset 'folder' needs data_root (a dataset tree) or images_dir and masks_dir")
    layout = find_splits(options.data_root, options.layout, options.split_lists)
    echo(layout.describe(options.folder))
    return layout.splits


def folder_datasets(options: DataOptions, *, seed: int = 0, echo: Callable[[str], None] = print
                    ) -> dict[str, Dataset]:
    """Train, val and test datasets of folder options; without a val split, `val_fraction` of the training
    pairs (drawn with `seed`) are held out; with `crop_size`, training reads random crops."""
    common = {"size": options.image_hw(), "keep_aspect": options.keep_aspect}
    splits = {split: split_dataset(folders, options, **common)
              for split, folders in folder_splits(options, echo=echo).items()}
    full = splits["train"]
    warn_if_stretched(full, options.image_hw(), keep_aspect=options.keep_aspect)
    warn_if_shared(splits)
    datasets: dict[str, Dataset] = dict(splits)
    if "val" not in datasets:
        if len(full) < 2:
            raise ConfigError(f"dataset 'folder' needs at least 2 image/mask pairs to hold some out for validation, "
                              f"found {len(full)}; give a val split")
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed)).tolist()
        held_out = max(1, round(len(full) * options.val_fraction))
        datasets["train"], datasets["val"] = DatasetPart(full, order[held_out:]), DatasetPart(full, order[:held_out])
    crop = options.crop_hw()
    if crop is not None:
        datasets["train"] = RandomCrops(datasets["train"], crop)
    return datasets


def split_dataset(folders: SplitFolders, options: DataOptions, **common: Any) -> FolderDataset | AnnotationDataset:
    """One split's dataset: its masks drawn from an annotation export (`AnnotationDataset`) or read from files."""
    if folders.annotations is not None:
        from seglab.data.annotations.dataset import AnnotationDataset

        return AnnotationDataset(folders.annotations, options.folder, crowd=options.folder.crowd, **common)
    return FolderDataset(folders.images_dir, folders.masks_dir, folders.folder_options(options.folder),
                         pairing=folders.pairing(options.folder), **common)


# What every seglab dataset says about its classes; wrappers pass it on from the dataset they wrap.
DATASET_DESCRIPTION = ("class_names", "num_classes", "ignore_index", "palette")


def _describe_like(wrapper: Dataset, dataset: Dataset) -> None:
    for name in DATASET_DESCRIPTION:
        setattr(wrapper, name, getattr(dataset, name, None))


class DatasetPart(Subset):
    """A `Subset` that keeps its dataset's class names, class count, ignore index and palette."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        super().__init__(dataset, indices)
        _describe_like(self, dataset)


class RandomCrops(Dataset):
    """Random `size` crops of another dataset's items, padded with its ignore index (image: 0) where an item is
    smaller, so that images of any size batch together. Crop positions come from torch's global generator,
    which training seeds per epoch (exact resume)."""

    ignore_index: int  # set by `_describe_like`, from the dataset wrapped

    def __init__(self, dataset: Dataset, size: tuple[int, int]) -> None:
        self.dataset, self.size = dataset, size
        _describe_like(self, dataset)

    def __len__(self) -> int:
        return dataset_length(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.dataset[index]
        (crop_h, crop_w), (height, width) = self.size, mask.shape
        pad_h, pad_w = max(0, crop_h - height), max(0, crop_w - width)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(torch.randint(0, mask.shape[0] - crop_h + 1, (1,)))
        left = int(torch.randint(0, mask.shape[1] - crop_w + 1, (1,)))
        return image[:, top:top + crop_h, left:left + crop_w], mask[top:top + crop_h, left:left + crop_w]


def warn_if_shared(datasets: Mapping[str, FolderDataset | AnnotationDataset]) -> int:
    """Warns when an image belongs to two splits (hand-made list files, a re-split gone wrong): the later split's
    scores would not be held out. Only a warning, since a smoke test may validate on its training folder on
    purpose. Returns the number of images shared."""
    # Normalised paths, not resolved ones: resolving would follow (and trip over) the links of bad files.
    files = {split: {os.path.abspath(image) for image, _ in dataset.pairs} for split, dataset in datasets.items()}
    total = 0
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = files.get(first, set()) & files.get(second, set())
        if shared:
            total += len(shared)
            warnings.warn(f"{len(shared)} images are in both the {first} and the {second} split (e.g. "
                          f"{min(shared)}), so {second} scores are not held out; fix the split lists or folders",
                          stacklevel=2)
    return total


def warn_if_stretched(dataset: Dataset, size: tuple[int, int] | None, *, keep_aspect: bool) -> int:
    """Warns once, with the count, when resizing to `size` distorts images of another aspect ratio; returns
    the count. Reads only the files' headers."""
    pairs = getattr(dataset, "pairs", None)
    if size is None or keep_aspect or not pairs:
        return 0
    target = size[1] / size[0]
    stretched = 0
    for image_path, _ in pairs:
        try:
            with Image.open(image_path) as image:
                width, height = upright_size(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # a bad file: the check before training reports it by name
        stretched += abs(width / height / target - 1) > 0.01
    if stretched:
        warnings.warn(f"{stretched} of {len(pairs)} training images are not {size[1]}:{size[0]} (W:H) and are "
                      f"stretched to image_size {list(size)}; set image_size to their [H, W], keep_aspect: true, or "
                      "image_size: null with crop_size", stacklevel=2)
    return stretched
