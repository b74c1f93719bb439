"""The LightningDataModule: builds the train/val/test datasets a config names and their seeded loaders.

Training order depends only on (seed, epoch), never on how many epochs this process has run, so a resumed run
sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from seglab.errors import ConfigError
from seglab.training.config import TrainConfig


class EpochSeededSampler(Sampler[int]):
    """A random permutation drawn from `seed + epoch`; Lightning calls `set_epoch` before every epoch."""

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


def build_datasets(config: TrainConfig) -> dict[str, Dataset]:
    """{"train", "val", "test"} datasets for `config` ("test" absent where the dataset has no labelled test set)."""
    if config.dataset == "shapes":
        from seglab.data import ShapesDataset

        common = {"size": config.image_size, "seed": config.seed}
        return {
            "train": ShapesDataset("train", length=config.train_length, **common),
            "val": ShapesDataset("val", length=config.val_length, **common),
            "test": ShapesDataset("test", **common),
        }
    if config.dataset == "pets":
        from seglab.data import OxfordPets

        common = {"split_scheme": config.split_scheme, "size": config.image_size, "seed": config.seed,
                  "val_fraction": config.val_fraction}
        return {split: OxfordPets(config.data_root, split, **common) for split in ("train", "val", "test")}
    if config.dataset == "folder":
        from seglab.data import FolderDataset

        full = FolderDataset(config.images_dir, config.masks_dir, size=config.image_size,
                             value_map=config.value_map, class_names=config.class_names,
                             ignore_index=config.ignore_index)
        if len(full) < 2:
            raise ConfigError(f"dataset 'folder' needs at least 2 image/mask pairs, found {len(full)}")
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(config.seed)).tolist()
        held_out = max(1, round(len(full) * config.val_fraction))
        train, val = Subset(full, order[held_out:]), Subset(full, order[:held_out])
        for part in (train, val):
            part.class_names, part.num_classes, part.ignore_index = (
                full.class_names, full.num_classes, full.ignore_index)
        return {"train": train, "val": val}
    raise ConfigError(f"unknown dataset {config.dataset!r}")


class SegmentationDataModule(pl.LightningDataModule):
    """Loaders over `datasets` ({"train", "val", optional "test"}), each item (image (3,H,W), mask (H,W))."""

    def __init__(self, datasets: dict[str, Dataset], *, batch_size: int, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__()
        self.datasets = datasets
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        train = datasets["train"]
        self.num_classes: int = train.num_classes
        self.class_names: list[str] = list(train.class_names)
        self.ignore_index: int = train.ignore_index
        # Display colours travel with the dataset into the checkpoint's InferenceSpec (None: seglab's default).
        palette = getattr(train, "palette", None)
        self.palette: list[list[int]] | None = None if palette is None else [list(c) for c in palette]

    @classmethod
    def from_config(cls, config: TrainConfig) -> SegmentationDataModule:
        return cls(build_datasets(config), batch_size=config.batch_size, num_workers=config.num_workers,
                   seed=config.seed)

    def _sampler(self, dataset: Dataset, *, shuffle: bool) -> Sampler[int] | None:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            # Each rank reads its own shard; the shuffle is seeded with (seed, epoch) like the 1-process case.
            return DistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                      shuffle=shuffle, seed=self.seed)
        return EpochSeededSampler(len(dataset), self.seed) if shuffle else None

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        options: dict[str, Any] = {"persistent_workers": True} if self.num_workers > 0 else {}
        # An own generator: otherwise every new iterator draws its worker seed from the global RNG, shifting
        # the augmentation and dropout numbers by a draw whenever Lightning re-creates a loader.
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=self._sampler(dataset, shuffle=shuffle),
                          num_workers=self.num_workers, drop_last=shuffle and len(dataset) > self.batch_size,
                          generator=generator, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise ConfigError("this dataset has no labelled test split")
        return self._loader("test", shuffle=False)
