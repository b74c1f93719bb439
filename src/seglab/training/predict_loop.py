"""`seglab predict` across processes, devices and machines, on Lightning's predict loop (the engine training
runs on): `Trainer.predict` under DDP, started by Lightning's launcher (`--devices N`), torchrun or SLURM.

- Sharding: `ShardSampler` gives input i to rank i mod world size, without the padding of `DistributedSampler`
  (which repeats inputs to even the shards): every input is predicted and written exactly once, shards differing
  by one input at most. Prediction needs no collective per step, so uneven shards cost nothing.
- Decoding runs in DataLoader workers; each rank loads its own `Predictor` on its own device and writes its
  outputs with `MaskWriter` (a `BasePredictionWriter`) through `seglab.inference.files.write_outputs` (atomic).
- Rank 0 alone checks `--out` against its manifest (`prepare_output_folder`) and tells every rank what is left to
  predict (`--skip-existing`); a refusal there stops every rank with the same message.
- At the end the ranks gather their summaries; a rank that died or went silent is named (`lost_processes_named`),
  and a rerun with `--skip-existing` finishes what it left.
Nothing here starts a process.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset, Sampler

from seglab.data.files import FileProblem
from seglab.errors import ConfigError, SeglabError
from seglab.inference.files import (
    InputImage,
    OutputWriteError,
    PredictionSummary,
    write_failed,
    write_outputs,
)
from seglab.inference.loading import load
from seglab.inference.manifest import PredictionManifest, prepare_output_folder
from seglab.inference.predictor import Predictor, image_tensor, same_size_batches, stack
from seglab.training.distributed import DestroyedAtExitDDP, lost_processes_named


def launch_geometry(devices: int | None, num_nodes: int | None) -> tuple[int, int]:
    """(processes per node, nodes): as given, else what torchrun (LOCAL_WORLD_SIZE, WORLD_SIZE) or SLURM
    (SLURM_NTASKS_PER_NODE, SLURM_NNODES) started, else one process. Lightning refuses a pair that does not
    match the processes started, so reading them here saves repeating them on the command line."""
    environment = os.environ
    if "LOCAL_WORLD_SIZE" in environment and "WORLD_SIZE" in environment:  # torchrun
        local, world = int(environment["LOCAL_WORLD_SIZE"]), int(environment["WORLD_SIZE"])
        found = (local, max(1, world // max(1, local)))
    elif "SLURM_NTASKS" in environment and environment.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        per_node = int(environment.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])
        found = (per_node, int(environment.get("SLURM_NNODES", "1")))
    else:
        found = (1, 1)
    return devices or found[0], num_nodes or found[1]


def is_distributed(devices: int | None, num_nodes: int | None) -> bool:
    """Whether this prediction runs on several processes (and so on Lightning's predict loop)."""
    per_node, nodes = launch_geometry(devices, num_nodes)
    return per_node * nodes > 1


class ShardSampler(Sampler[int]):
    """Indices `rank, rank + world, ...` of `length`: each index on exactly one rank, none repeated."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


class ImageFiles(Dataset):
    """(index, image (3, H, W) in [0, 1] or the `FileProblem` that reading it raised), decoded in the workers."""

    def __init__(self, items: Sequence[InputImage]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | FileProblem]:
        try:
            return index, image_tensor(self.items[index].path)
        except FileProblem as problem:
            return index, problem


def as_list(batch: list) -> list:
    """Keeps a batch as a list: images of several sizes cannot be stacked."""
    return batch


@dataclass(frozen=True)
class PredictOptions:
    """What `seglab predict` does to each image and writes (the manifest's options, and the engine's)."""

    engine: str | None = None
    precision: str = "fp32"
    batch_size: int = 8
    tile_batch: int | None = None
    tile: int | None = None
    overlap: float = 0.25
    tta: str | None = None
    scales: Sequence[float] | None = None
    overlay: bool = False
    save_probs: bool = False
    workers: int = 2


class PredictionData(pl.LightningDataModule):
    """The inputs still to predict, decided on rank 0 (`prepare_output_folder`) and broadcast to every rank."""

    def __init__(self, items: Sequence[InputImage], out: Path, manifest: PredictionManifest, options: PredictOptions,
                 *, overwrite: bool, skip_existing: bool) -> None:
        super().__init__()
        self.items, self.out, self.manifest, self.options = list(items), out, manifest, options
        self.overwrite, self.skip_existing = overwrite, skip_existing
        self.todo: list[InputImage] = []

    def setup(self, stage: str) -> None:
        decision: tuple[list[int] | None, str | None] = (None, None)
        trainer = self.trainer
        assert trainer is not None  # Lightning attaches the trainer before setup
        if trainer.global_rank == 0:
            try:
                todo = prepare_output_folder(self.out, self.manifest, self.items, overlay=self.options.overlay,
                                             save_probs=self.options.save_probs, overwrite=self.overwrite,
                                             skip_existing=self.skip_existing)
                positions = {id(item): position for position, item in enumerate(self.items)}
                decision = ([positions[id(item)] for item in todo], None)
            except SeglabError as error:
                decision = (None, str(error))
        indices, refusal = trainer.strategy.broadcast(decision)
        if refusal is not None:
            raise ConfigError(refusal)
        assert indices is not None  # rank 0 sent either the indices or a refusal
        self.todo = [self.items[index] for index in indices]

    def predict_dataloader(self) -> DataLoader:
        trainer = self.trainer
        assert trainer is not None  # Lightning attaches the trainer before asking for loaders
        return DataLoader(ImageFiles(self.todo), batch_size=self.options.batch_size, collate_fn=as_list,
                          sampler=ShardSampler(len(self.todo), trainer.global_rank, trainer.world_size),
                          num_workers=self.options.workers, persistent_workers=False)


class SegmentationPrediction(pl.LightningModule):
    """Each rank's `Predictor` (loaded on the rank's own device); a step returns, per input of the batch,
    (index, image, scores, are probabilities) or (index, the problem reading it)."""

    def __init__(self, model: str | Path, options: PredictOptions) -> None:
        super().__init__()
        self.model_path, self.options = model, options
        self.predictor: Predictor | None = None

    def setup(self, stage: str) -> None:
        options = self.options
        self.predictor = load(self.model_path, engine=options.engine, device=self.trainer.strategy.root_device,
                              precision=options.precision, batch_size=options.batch_size,
                              tile_batch=options.tile_batch)

    def predict_step(self, batch: list[tuple[int, Any]], batch_idx: int) -> list[tuple]:
        assert self.predictor is not None  # set up by Lightning before the first step
        options = self.options
        results: list[tuple] = [(index, image) for index, image in batch if isinstance(image, FileProblem)]
        readable = [(index, image) for index, image in batch if not isinstance(image, FileProblem)]
        for group in same_size_batches(readable, self.predictor.images_per_batch(options.tile), lambda pair: pair[1]):
            scores, are_probabilities = self.predictor.scores(
                stack([image for _, image in group]), tile=options.tile, overlap=options.overlap, tta=options.tta,
                scales=options.scales)
            results += [(index, image, item_scores, are_probabilities)
                        for (index, image), item_scores in zip(group, scores, strict=True)]
        return results


class MaskWriter(BasePredictionWriter):
    """Writes each batch's outputs as it comes (`write_outputs`: atomic files), keeps this rank's summary, and at
    the end gathers every rank's on every rank (the collective in which a lost rank shows)."""

    def __init__(self, data: PredictionData, out: Path, options: PredictOptions) -> None:
        super().__init__(write_interval="batch")
        self.data, self.out, self.options = data, out, options
        self.summary = PredictionSummary()
        self.total = PredictionSummary()

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        assert isinstance(pl_module, SegmentationPrediction) and pl_module.predictor is not None
        spec = pl_module.predictor.spec
        for result in prediction:
            if len(result) == 2:
                self.summary.failures.append(result[1])
                continue
            index, image, scores, are_probabilities = result
            try:
                write_outputs(self.data.todo[index], self.out, image, [(0, image.shape[-2], scores, are_probabilities)],
                              spec, overlay=self.options.overlay, save_probs=self.options.save_probs)
            except OutputWriteError as error:
                raise write_failed(error.path, error.cause, self.summary.predicted) from error.cause
            self.summary.predicted += 1

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (self.summary.predicted, self.summary.failures))
        else:
            gathered = [(self.summary.predicted, self.summary.failures)]
        self.total = PredictionSummary(predicted=sum(count for count, _ in gathered),
                                       failures=[problem for _, problems in gathered for problem in problems])


def predict_distributed(model: str | Path, items: Sequence[InputImage], out: str | Path,
                        manifest: PredictionManifest, options: PredictOptions, *, overwrite: bool = False,
                        skip_existing: bool = False, devices: int | None = None, num_nodes: int | None = None,
                        accelerator: str = "cpu", timeout_s: float = 1800, progress: bool = False
                        ) -> tuple[PredictionSummary, bool]:
    """Predicts `items` into `out` on every process of this DDP world (see the module's doc); returns the summary
    of all ranks together, and whether this process is rank 0 (the one that reports)."""
    out = Path(out)
    per_node, nodes = launch_geometry(devices, num_nodes)
    trainer = pl.Trainer(accelerator=accelerator, devices=per_node, num_nodes=nodes,
                         strategy=DestroyedAtExitDDP(timeout=datetime.timedelta(seconds=timeout_s)), logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
                         use_distributed_sampler=False, inference_mode=True)
    data = PredictionData(items, out, manifest, options, overwrite=overwrite, skip_existing=skip_existing)
    writer = MaskWriter(data, out, options)
    callbacks = trainer.callbacks  # pyright: ignore[reportAttributeAccessIssue] (set by Lightning's connectors)
    callbacks.append(writer)
    advice = (f"Prediction stops on every process; every output written so far is whole: finish the rest with the "
              f"same command and --skip-existing (into {out})")
    with lost_processes_named(trainer, out, timeout_s, advice=advice):
        trainer.predict(SegmentationPrediction(model, options), datamodule=data, return_predictions=False)
    return writer.total, trainer.global_rank == 0


def options_from(values: Mapping[str, Any]) -> PredictOptions:
    """`PredictOptions` from the command line's values (unknown keys ignored)."""
    known = PredictOptions.__dataclass_fields__
    return PredictOptions(**{key: value for key, value in values.items() if key in known})
