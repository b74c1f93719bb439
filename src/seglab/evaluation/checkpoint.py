"""`seglab evaluate`: score a checkpoint on a split of its run's dataset or on image/mask folders, and write
the console table, `metrics.json`, `per_image.csv` and the confusion matrix (CSV and PNG)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from seglab.data.datasets import build_datasets
from seglab.data.folder import FolderDataset
from seglab.data.options import DataOptions, FolderOptions
from seglab.data.protocols import dataset_length
from seglab.errors import ConfigError
from seglab.evaluation.loop import OnScored, evaluate
from seglab.evaluation.scores import Evaluation
from seglab.evaluation.writers import format_scores, write_evaluation
from seglab.inference.loading import (
    checkpoint_path,
    load,
    predictor_from_checkpoint,
    read_checkpoint_and_sha256,
    resolve_engine,
)
from seglab.inference.predictor import Predictor

SPLITS = ("val", "test")
IDENTITY_KEY = "checkpoint_sha256"  # in metrics.json: which weights the scores belong to


def checkpoint_identity(path: Path) -> str:
    """The sha256 of the checkpoint file's bytes. Content, not size + mtime: a checkpoint copied with its times
    kept (cp -p, rsync) or rewritten within the file system's time resolution still tells apart, and hashing
    costs a fraction of the read that loading the checkpoint does anyway. For a PyTorch checkpoint, take the hash
    of the bytes actually loaded from `read_checkpoint_and_sha256` instead: hashing the path again later could
    name a file that replaced the one scored."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class CheckpointEvaluation:
    evaluation: Evaluation
    out: Path
    table: str
    metrics: dict[str, Any]  # what metrics.json holds
    predictor: Predictor  # what scored it


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint lies in (`<run>/checkpoints/x.ckpt`), if it does."""
    if checkpoint.parent.name == "checkpoints" and (checkpoint.parent.parent / "config.yaml").is_file():
        return checkpoint.parent.parent
    return None


def run_datasets(checkpoint: Mapping[str, Any], path: str | Path = "<checkpoint>") -> dict[str, Dataset]:
    """The datasets ({"train", "val", optional "test"}) of the run that wrote `checkpoint` (the dict
    `read_checkpoint` returns for `path`), rebuilt from the data options and seed saved in its config."""
    params = checkpoint.get("hyper_parameters") or {}
    if "config" not in params:
        raise ConfigError(f"{path} carries no training config; evaluate it on folders with --images/--masks")
    config = params["config"]
    return build_datasets(DataOptions.from_flat(config), seed=int(config.get("seed", 0)))


def split_dataset(datasets: Mapping[str, Dataset], split: str) -> Dataset:
    """`datasets[split]` for `split` in val/test, with clear errors."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split not in datasets:
        raise ConfigError(f"the run's dataset has no labelled {split} split; use --split val, or --images/--masks")
    return datasets[split]


def folder_dataset(predictor: Predictor, images: str | Path, masks: str | Path,
                   masks_read: FolderOptions = FolderOptions()) -> FolderDataset:  # noqa: B008 (frozen default)
    """Image/mask folders at the files' own size, read with the model's classes and ignore index; `masks_read`
    gives the masks' encoding and pairing (value map or palette, suffixes, sub-folders)."""
    spec = predictor.spec
    options = dataclasses.replace(masks_read, class_names=list(spec.class_names), num_classes=None,
                                  ignore_index=spec.ignore_index)
    return FolderDataset(images, masks, options)


def evaluate_checkpoint(checkpoint: str | Path, *, split: str = "test", images: str | Path | None = None,
                        masks: str | Path | None = None,
                        masks_read: FolderOptions = FolderOptions(),  # noqa: B008 (frozen default)
                        out: str | Path | None = None, engine: str | None = None, device: str | None = None,
                        precision: str = "fp32", batch_size: int = 8, tile_batch: int | None = None,
                        tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                        scales: Sequence[float] | None = None, progress: Callable[[Iterable], Iterable] = iter
                        ) -> CheckpointEvaluation:
    """Evaluate a checkpoint (or run folder) on `split` of its run's dataset, or on `images`/`masks` folders,
    and write the reports to `out` (default `<run>/evaluate/<split>/`, or `<run>/evaluate/folder-<name>/` for
    folders: a folder never takes a split's place, whatever it is called). An ONNX export (run by
    ONNX Runtime, `engine` as in `seglab.load`) carries no training config: it is scored on folders only."""
    saved: dict[str, Any] | None = None
    if resolve_engine(checkpoint, engine) == "onnxruntime":
        path = Path(checkpoint)
        # ONNX Runtime opens the file itself: hashed just before, the nearest seglab gets to the bytes loaded.
        identity = checkpoint_identity(path)
        predictor = load(path, engine="onnxruntime", device=device, precision=precision, batch_size=batch_size,
                         tile_batch=tile_batch)
    else:
        path = checkpoint_path(checkpoint)
        # Read once: the same dict gives the predictor and the run's dataset, and its bytes the identity.
        saved, identity = read_checkpoint_and_sha256(path)
        predictor = predictor_from_checkpoint(saved, path, device=device, precision=precision,
                                              batch_size=batch_size, tile_batch=tile_batch)
    if (images is None) != (masks is None):
        raise ConfigError("give both --images and --masks (folders paired by file stem), or neither")
    if images is not None and masks is not None:
        dataset = folder_dataset(predictor, images, masks, masks_read)
        source, scored_split = f"folder {images}", None
        default_name = f"folder-{Path(images).resolve().name or 'root'}"
    elif saved is None:
        raise ConfigError(f"{path} is an ONNX export, which carries no training config and so no dataset split; "
                          "evaluate it on folders with --images/--masks")
    else:
        dataset = split_dataset(run_datasets(saved, path), split)
        source, scored_split = f"{split} split", split
        default_name = split
    if dataset_length(dataset) == 0:
        raise ConfigError(f"nothing to evaluate: the {source} holds no image/mask pair")
    if out is None:
        run = run_folder_of(path)
        if run is None:
            raise ConfigError(f"{path} is not inside a seglab run folder; pass --out DIR for the reports")
        out = run / "evaluate" / default_name
    return evaluate_and_write(predictor, dataset, Path(out), checkpoint=path, identity=identity,
                              split=scored_split, source=source, tile=tile, overlap=overlap, tta=tta, scales=scales,
                              progress=progress)


def evaluate_and_write(predictor: Predictor, dataset: Dataset, out: Path, *, checkpoint: Path, identity: str,
                       split: str | None, source: str, tile: int | None = None, overlap: float = 0.25,
                       tta: str | None = None, scales: Sequence[float] | None = None, on_scored: OnScored | None = None,
                       progress: Callable[[Iterable], Iterable] = iter) -> CheckpointEvaluation:
    """`evaluate` the predictor on `dataset` and write the reports (`write_evaluation`) into `out`; `checkpoint`
    and `source` (e.g. "test split") describe the scores in metrics.json and the table; `split` is the run's
    split that `dataset` is (None for anything else, such as folders: the report trusts only scores whose
    metrics.json names the split); `identity` is the sha256
    of the bytes the predictor's weights were loaded from (`read_checkpoint_and_sha256`), taken by the caller when
    it loaded them: hashing `checkpoint` here, after scoring, could name a file that replaced it meanwhile."""
    evaluation = evaluate(predictor, dataset, tile=tile, overlap=overlap, tta=tta, scales=scales,
                          on_scored=on_scored, progress=progress)
    about = {"checkpoint": str(checkpoint), IDENTITY_KEY: identity, "split": split, "data": source,
             "images": dataset_length(dataset), "precision": predictor.precision,
             "device": str(predictor.device), "tile": tile, "tta": tta, "scales": list(scales) if scales else None}
    metrics = write_evaluation(out, evaluation, predictor.class_names, **about)
    table = format_scores(evaluation.scores, predictor.class_names,
                          title=f"{source} ({about['images']} images), {checkpoint.name}, {predictor.precision}")
    return CheckpointEvaluation(evaluation, out, table, metrics, predictor)
