"""The LightningDataModule: the train/val/test datasets a config names and their seeded loaders.

As Lightning means it: `prepare_data` reads every file once per machine (a bad one stops the run before its first
step), `setup` builds the datasets in every process. Training order depends only on (seed, epoch), never on how
many epochs this process has run, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.synchronize import Event as EventType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from seglab.data.datasets import build_datasets
from seglab.data.options import DataOptions
from seglab.data.protocols import DescribedDataset, dataset_length, described
from seglab.data.validation import ReportBadFiles, collate_or_report, raise_bad_sample, refuse_bad_files
from seglab.errors import ConfigError
from seglab.training.callbacks.seeds import epoch_seed
from seglab.training.config import TrainConfig


def ignore_stop_signals(worker_id: int, then: Callable[[int], None] | None = None,
                        stopping: EventType | None = None) -> None:
    """A DataLoader worker's init: SIGINT and SIGTERM are left to the main process, then `then(worker_id)`.

    A terminal's Ctrl+C, `timeout` and SLURM signal the whole process group. A worker that died of the signal
    would make the main process fail with "DataLoader worker exited unexpectedly" instead of saving and stopping
    (`StopOnSignal`); the main process ends its workers itself. Once `stopping` is set (training ended by an
    exception), SIGTERM ends the worker: Python's exit ends leftover workers with it and then waits for them.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if stopping is None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, functools.partial(_end_if_stopping, stopping))
    if then is not None:
        then(worker_id)


def _end_if_stopping(stopping: EventType, signum: int, frame: object) -> None:
    if stopping.is_set():
        os._exit(0)


class EpochSeededSampler(Sampler[int]):
    """A random permutation drawn from `epoch_seed(seed, epoch)`; Lightning calls `set_epoch` before every epoch."""

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


class EvaluationShard(Sampler[int]):
    """Items rank, rank + world_size, ... of `length`: with DDP, every validation/test image is scored on exactly
    one rank. (DistributedSampler pads the shards to one length by repeating images, which the gathered
    confusion matrix would count twice; uneven shards are harmless here, evaluation steps do not synchronise.)

    A rank with no item (more ranks than images) still needs one batch: Lightning skips a validation without
    batches, and that rank would then miss the gathers of the others, which wait for it for good. Its shard is
    the one index `length`, which `PaddedForShards` serves as an item without a labelled pixel: it adds nothing
    to the confusion matrix, and the module gives its loss no weight.
    """

    def __init__(self, length: int, *, rank: int, world_size: int) -> None:
        self.indices: Sequence[int] = range(rank, length, world_size)
        self.padded = not self.indices
        if self.padded:
            self.indices = [length]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class PaddedForShards(Dataset):
    """`dataset` and one more item at index len(dataset): the first item's image with every pixel of its mask
    `ignore_index` (see `EvaluationShard`)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return dataset_length(self.dataset) + 1

    def __getitem__(self, index: int) -> Any:
        if index < dataset_length(self.dataset):
            return self.dataset[index]
        image, mask = self.dataset[0]
        return image, torch.full_like(mask, described(self.dataset).ignore_index)


def describe_training_epoch(length: int, world_size: int, batch_size: int, drop_last: bool) -> str:
    """What one training epoch reads of `length` images: repeated to even the shards, left out by drop_last."""
    shard = -(-length // world_size)
    left_out = shard % batch_size if drop_last else 0
    if world_size == 1:
        text = f"training epoch: {length} images"
    else:
        repeated = shard * world_size - length
        text = (f"training epoch: {length} images over {world_size} processes, {shard} each" +
                (f" ({repeated} repeated to even the shards, as DistributedSampler does)" if repeated else ""))
    text += f"; batches of {batch_size}: {shard // batch_size if drop_last else -(-shard // batch_size)}"
    text += " per process" if world_size > 1 else ""
    if not left_out:
        return text + ", no image left out"
    where = "of each process's shard " if world_size > 1 else ""
    return (text + f"; the last {left_out} {where}are left out of each epoch (drop_last keeps batches full; the "
            "order is reshuffled every epoch, so a different few each time)")


class SegmentationDataModule(pl.LightningDataModule):
    """Loaders over the datasets ({"train", "val", optional "test"}), each item (image (3,H,W), mask (H,W)).

    Either `datasets` are given (tests, notebooks), or `data` names them (`from_config`): `prepare_data` then
    checks their files and `setup` builds them. A caller that needs the classes before `Trainer.fit` (the
    LightningModule is built from them) calls both itself, as Lightning's docs show; each runs once.
    """

    def __init__(self, datasets: dict[str, Dataset] | None = None, *, data: DataOptions | None = None,
                 batch_size: int, num_workers: int = 0, seed: int = 0, eval_batch_size: int | None = None) -> None:
        super().__init__()
        if (datasets is None) == (data is None):
            raise ValueError("give SegmentationDataModule either datasets or the data options that name them")
        self.datasets: dict[str, Dataset] = datasets or {}
        self.data = data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._files_checked = datasets is not None  # datasets given by the caller are the caller's to check
        self._epoch_described = False
        self._stopping: EventType | None = None  # tells the loader workers that training has ended (on_exception)

    @classmethod
    def from_config(cls, config: TrainConfig) -> SegmentationDataModule:
        # Images that keep their own sizes cannot be stacked: they are validated one at a time.
        return cls(data=config.data, batch_size=config.batch_size, num_workers=config.num_workers,
                   seed=config.seed, eval_batch_size=1 if config.data.image_size is None else None)

    def prepare_data(self) -> None:
        """Every file is read once before the first step, by one process per machine (Lightning calls this on
        each node's first process): a bad one stops training now, not hours in."""
        if self._files_checked or self.data is None:
            return
        refuse_bad_files(build_datasets(self.data, seed=self.seed, echo=lambda text: None).values(), "training")
        self._files_checked = True

    def setup(self, stage: str) -> None:
        """The datasets, built in every process (their files are listed, not read)."""
        if not self.datasets and self.data is not None:
            self.datasets = build_datasets(self.data, seed=self.seed, echo=rank_zero_info)

    def _train_set(self) -> DescribedDataset:
        if "train" not in self.datasets:
            raise RuntimeError("SegmentationDataModule.setup() has not run: the datasets are built there")
        return described(self.datasets["train"])

    @property
    def num_classes(self) -> int:
        return self._train_set().num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self._train_set().class_names)

    @property
    def ignore_index(self) -> int:
        return self._train_set().ignore_index

    @property
    def palette(self) -> list[list[int]] | None:
        """Display colours, which travel with the dataset into the checkpoint's InferenceSpec (None: seglab's
        default)."""
        palette = getattr(self._train_set(), "palette", None)
        return None if palette is None else [list(colour) for colour in palette]

    def _sampler(self, dataset: Dataset, *, shuffle: bool) -> Sampler[int] | None:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            if not shuffle:
                return EvaluationShard(dataset_length(dataset), rank=trainer.global_rank, world_size=trainer.world_size)
            # Each rank reads its own shard; the shuffle is seeded with (seed, epoch) like the 1-process case.
            return DistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                      shuffle=True, seed=self.seed)
        return EpochSeededSampler(dataset_length(dataset), self.seed) if shuffle else None

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        world_size = self.trainer.world_size if self.trainer is not None else 1
        # DistributedSampler deals ceil(length / world_size) images to each process, repeating a few to even the
        # shards; drop_last then keeps every training batch full, unless a process's shard is smaller than one
        # batch (it would train on nothing).
        length = dataset_length(dataset)
        shard = -(-length // world_size)
        drop_last = shuffle and shard > self.batch_size
        if shuffle and not self._epoch_described:
            rank_zero_info(f"seglab: {describe_training_epoch(length, world_size, self.batch_size, drop_last)}")
            self._epoch_described = True
        options: dict[str, Any] = {"persistent_workers": True} if self.num_workers > 0 else {}
        # An own generator: otherwise every new iterator draws its worker seed from the global RNG, shifting
        # the augmentation and dropout numbers by a draw whenever Lightning re-creates a loader.
        generator = torch.Generator().manual_seed(self.seed)
        batch_size = self.batch_size if shuffle else self.eval_batch_size
        if self.num_workers > 0:
            options["worker_init_fn"] = self._worker_init()
        sampler = self._sampler(dataset, shuffle=shuffle)
        if getattr(sampler, "padded", False):
            dataset = PaddedForShards(dataset)
        # A file that goes bad after the check comes back as a BadSample, raised by on_before_batch_transfer.
        return DataLoader(ReportBadFiles(dataset), batch_size=batch_size, sampler=sampler,
                          num_workers=self.num_workers, drop_last=drop_last, generator=generator,
                          collate_fn=collate_or_report, **options)

    def _worker_init(self) -> functools.partial:
        # Lightning seeds the workers through a worker_init_fn that it adds only where a loader has none
        # (after seed_everything(workers=True)); this one has ours, so it calls Lightning's itself.
        seeding = None
        if int(os.environ.get("PL_SEED_WORKERS", 0)):
            rank = self.trainer.global_rank if self.trainer is not None else 0
            seeding = functools.partial(pl_worker_init_function, rank=rank)
        if self._stopping is None:
            self._stopping = multiprocessing.get_context().Event()
        return functools.partial(ignore_stop_signals, then=seeding, stopping=self._stopping)

    def on_exception(self, exception: BaseException) -> None:
        # Lightning ends the workers of the loop that was running only: after a stop in validation, the training
        # loader's (persistent) workers live on. Python's exit ends them with SIGTERM, which they ignore until
        # this is set, and then waits for them: without it, the process would never exit.
        if self._stopping is not None:
            self._stopping.set()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return raise_bad_sample(batch)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.datasets:
            raise ConfigError("this dataset has no labelled test split")
        return self._loader("test", shuffle=False)
