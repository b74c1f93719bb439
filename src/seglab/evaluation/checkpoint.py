"""`seglab evaluate`: score a checkpoint on a split of its run's dataset or on image/mask folders, and write
the console table, `metrics.json`, `per_image.csv` and the confusion matrix (CSV and PNG)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from seglab.data.validation import refuse_bad_files
from seglab.errors import ConfigError
from seglab.evaluation.reports import Evaluation, evaluate, format_scores
from seglab.inference import Predictor, load, read_checkpoint
from seglab.inference.loading import checkpoint_path, predictor_from_checkpoint, resolve_engine

SPLITS = ("val", "test")


@dataclass
class CheckpointEvaluation:
    evaluation: Evaluation
    out: Path
    table: str
    metrics: dict[str, Any]  # what metrics.json holds


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint lies in (`<run>/checkpoints/x.ckpt`), if it does."""
    if checkpoint.parent.name == "checkpoints" and (checkpoint.parent.parent / "config.yaml").is_file():
        return checkpoint.parent.parent
    return None


def run_datasets(checkpoint: Mapping[str, Any], path: str | Path = "<checkpoint>") -> dict[str, Dataset]:
    """The datasets ({"train", "val", optional "test"}) of the run that wrote `checkpoint` (the dict
    `read_checkpoint` returns for `path`), built from the training config saved in it."""
    from seglab.training.config import make_config
    from seglab.training.datamodule import build_datasets

    params = checkpoint.get("hyper_parameters") or {}
    if "config" not in params:
        raise ConfigError(f"{path} carries no training config; evaluate it on folders with --images/--masks")
    return build_datasets(make_config({**params["config"], "pretrained_backbone": None}))


def split_dataset(datasets: Mapping[str, Dataset], split: str) -> Dataset:
    """`datasets[split]` for `split` in val/test, with clear errors."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split not in datasets:
        raise ConfigError(f"the run's dataset has no labelled {split} split; use --split val, or --images/--masks")
    return datasets[split]


def folder_dataset(predictor: Predictor, images: str | Path, masks: str | Path, *,
                   value_map: Mapping[int, int] | None = None, palette: Mapping[int, Sequence[int]] | None = None,
                   mask_suffix: str = "") -> Dataset:
    """Image/mask folders at the files' own size, read with the model's classes and ignore index."""
    from seglab.data.folder import FolderDataset

    spec = predictor.spec
    return FolderDataset(images, masks, size=None, value_map=value_map, palette=palette,
                         class_names=spec.class_names, ignore_index=spec.ignore_index, mask_suffix=mask_suffix)


def write_evaluation(out: Path, evaluation: Evaluation, class_names: Sequence[str], **about: Any) -> dict[str, Any]:
    """metrics.json (scores plus `about`), per_image.csv, confusion_matrix.csv and .png into `out`."""
    from seglab.evaluation.outputs import (
        scores_to_dict,
        write_confusion_csv,
        write_metrics_json,
        write_per_image_csv,
    )
    from seglab.evaluation.plots import save_confusion_matrix_png

    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(out / "metrics.json", evaluation.scores, class_names, **about)
    write_per_image_csv(out / "per_image.csv", evaluation.per_image, class_names)
    write_confusion_csv(out / "confusion_matrix.csv", evaluation.confusion, class_names)
    save_confusion_matrix_png(evaluation.confusion, class_names, out / "confusion_matrix.png")
    return {**scores_to_dict(evaluation.scores, class_names), **about}


def evaluate_checkpoint(checkpoint: str | Path, *, split: str = "test", images: str | Path | None = None,
                        masks: str | Path | None = None, value_map: Mapping[int, int] | None = None,
                        palette: Mapping[int, Sequence[int]] | None = None, mask_suffix: str = "",
                        out: str | Path | None = None, engine: str | None = None, device: str | None = None,
                        precision: str = "fp32", batch_size: int = 8, tile_batch: int | None = None,
                        tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                        scales: Sequence[float] | None = None, progress: Callable[[Iterable], Iterable] = iter
                        ) -> CheckpointEvaluation:
    """Evaluate a checkpoint (or run folder) on `split` of its run's dataset, or on `images`/`masks` folders,
    and write the reports to `out` (default `<run>/evaluate/<split or folder name>/`). An ONNX export (run by
    ONNX Runtime, `engine` as in `seglab.load`) carries no training config: it is scored on folders only."""
    saved: dict[str, Any] | None = None
    if resolve_engine(checkpoint, engine) == "onnxruntime":
        path = Path(checkpoint)
        predictor = load(path, engine="onnxruntime", device=device, precision=precision, batch_size=batch_size,
                         tile_batch=tile_batch)
    else:
        path = checkpoint_path(checkpoint)
        # Read once: the same dict gives the predictor and the run's dataset.
        saved = read_checkpoint(path)
        predictor = predictor_from_checkpoint(saved, path, device=device, precision=precision,
                                              batch_size=batch_size, tile_batch=tile_batch)
    if (images is None) != (masks is None):
        raise ConfigError("give both --images and --masks (folders paired by file stem), or neither")
    if images is not None:
        dataset = folder_dataset(predictor, images, masks, value_map=value_map, palette=palette,
                                 mask_suffix=mask_suffix)
        source = f"folder {images}"
        default_name = Path(images).resolve().name or "folder"
    elif saved is None:
        raise ConfigError(f"{path} is an ONNX export, which carries no training config and so no dataset split; "
                          "evaluate it on folders with --images/--masks")
    else:
        dataset = split_dataset(run_datasets(saved, path), split)
        source = f"{split} split"
        default_name = split
    if len(dataset) == 0:
        raise ConfigError(f"nothing to evaluate: the {source} holds no image/mask pair")
    # As training does: every bad file is listed before any is scored, and scores are never of a partial set.
    refuse_bad_files([dataset], "evaluation")
    if out is None:
        run = run_folder_of(path)
        if run is None:
            raise ConfigError(f"{path} is not inside a seglab run folder; pass --out DIR for the reports")
        out = run / "evaluate" / default_name
    return evaluate_and_write(predictor, dataset, Path(out), checkpoint=path, source=source, tile=tile,
                              overlap=overlap, tta=tta, scales=scales, progress=progress)


def evaluate_and_write(predictor: Predictor, dataset: Dataset, out: Path, *, checkpoint: Path, source: str,
                       tile: int | None = None, overlap: float = 0.25, tta: str | None = None,
                       scales: Sequence[float] | None = None, progress: Callable[[Iterable], Iterable] = iter
                       ) -> CheckpointEvaluation:
    """`evaluate` the predictor on `dataset` and write the reports (`write_evaluation`) into `out`; `checkpoint`
    and `source` (e.g. "test split") describe the scores in metrics.json and the table."""
    evaluation = evaluate(predictor, dataset, tile=tile, overlap=overlap, tta=tta, scales=scales, progress=progress)
    about = {"checkpoint": str(checkpoint), "data": source, "images": len(dataset), "precision": predictor.precision,
             "device": str(predictor.device), "tile": tile, "tta": tta, "scales": list(scales) if scales else None}
    metrics = write_evaluation(out, evaluation, predictor.class_names, **about)
    table = format_scores(evaluation.scores, predictor.class_names,
                          title=f"{source} ({len(dataset)} images), {checkpoint.name}, {predictor.precision}")
    return CheckpointEvaluation(evaluation, out, table, metrics)
