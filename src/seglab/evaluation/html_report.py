"""`seglab report RUN_DIR`: one self-contained HTML page about a run (Jinja2 template, PNGs inlined).

The page shows the resolved config, the training curves, val and test metrics, per-class IoU, the confusion
matrix, the best and worst predictions by per-image IoU, the model's size and the run's speed. Everything is
inside the file: images are `data:` URIs and no attribute points to the network.
"""

from __future__ import annotations

import base64
import csv
import datetime
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from seglab.atomic import write_text_atomically
from seglab.errors import ConfigError
from seglab.evaluation.checkpoint import IDENTITY_KEY, evaluate_and_write, run_datasets
from seglab.evaluation.plots import save_triplet_grid, thumbnail
from seglab.inference.loading import checkpoint_path, predictor_from_checkpoint, read_checkpoint_and_sha256
from seglab.inference.predictor import Predictor
from seglab.models.summary import count_parameters, forward_gflops

TEMPLATE = "report.html.j2"
GALLERY_SIZE = 6  # best and worst images shown each
SUMMARY_METRICS = (("pixel_accuracy", "pixel accuracy"), ("mean_class_accuracy", "mean class accuracy"),
                   ("miou", "mIoU"), ("frequency_weighted_iou", "frequency-weighted IoU"), ("mean_dice", "mean Dice"),
                   ("mean_precision", "mean precision"), ("mean_recall", "mean recall"))


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _percent(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _history(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def ensure_evaluations(run_dir: Path, predictor: Predictor, datasets: Mapping[str, Dataset], checkpoint: Path,
                       identity: str) -> dict[str, dict[str, Any]]:
    """metrics.json of `<run>/evaluate/val` and `/test` (test only where the run's dataset has a test split),
    evaluating `predictor` on the split where the file is missing, does not name the split (a folder evaluation,
    or an older seglab's file) or scored other weights than the predictor's (`identity`: the sha256 of the bytes
    its weights were loaded from; a resume replaced best.ckpt; an older file has no identity: scored again too)."""
    found: dict[str, dict[str, Any]] = {}
    for split in ("val", "test"):
        if split not in datasets:
            continue
        path = run_dir / "evaluate" / split / "metrics.json"
        stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if stored.get("split") != split or stored.get(IDENTITY_KEY) != identity:
            stored = evaluate_and_write(predictor, datasets[split], path.parent, checkpoint=checkpoint,
                                        identity=identity, split=split, source=f"{split} split").metrics
        found[split] = stored
    return found


def _class_bars(metrics: dict[str, dict[str, Any]], class_names: Sequence[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(6.0, 0.7 * len(class_names) * len(metrics) + 2), 3.6))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    positions = np.arange(len(class_names))
    width = 0.8 / max(1, len(metrics))
    for offset, (split, values) in enumerate(metrics.items()):
        ious = [values["per_class"][name]["iou"] for name in class_names]
        bars = [0.0 if iou is None else iou for iou in ious]
        axis.bar(positions + (offset - (len(metrics) - 1) / 2) * width, bars, width, label=split)
    axis.set_xticks(positions, class_names, rotation=30 if len(class_names) > 6 else 0, ha="right"
                    if len(class_names) > 6 else "center")
    axis.set_ylim(0, 1)
    axis.set_ylabel("IoU")
    axis.grid(axis="y", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def _gallery(run_dir: Path, split: str, predictor: Predictor, dataset: Dataset, folder: Path) -> tuple[Path, Path]:
    """Grids of the best and worst images of `split` by mean IoU per image (from its per_image.csv)."""
    with open(run_dir / "evaluate" / split / "per_image.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))

    def mean_iou(row: dict[str, str]) -> float:
        values = [float(v) for k, v in row.items() if k.startswith("iou_") and v not in ("", None)]
        return float(np.mean(values)) if values else float("nan")

    scored = sorted(((score, index) for index, score in enumerate(map(mean_iou, rows)) if not math.isnan(score)),
                    reverse=True)
    count = min(GALLERY_SIZE, max(1, len(scored) // 2))
    paths = []
    for name, chosen in (("best", scored[:count]), ("worst", scored[::-1][:count])):
        grid_rows = []
        for score, index in chosen:
            image, truth = dataset[index]
            caption = f"{Path(rows[index]['file']).name}  mIoU {100 * score:.1f}"
            # Thumbnails of one height: small images become readable, large ones keep the page light.
            grid_rows.append((*thumbnail(image, predictor.predict(image), truth.numpy()), caption))
        path = folder / f"{name}.png"
        save_triplet_grid(grid_rows, predictor.palette, predictor.class_names, path)
        paths.append(path)
    return paths[0], paths[1]


def _model_row(predictor: Predictor) -> dict[str, Any]:
    spec = predictor.spec
    side = min(spec.working_size) if spec.working_size else 224
    return {"name": spec.model, "parameters": f"{count_parameters(predictor.model) / 1e6:.2f} M",
            "gflops": f"{forward_gflops(predictor.model, side):.1f}", "flops_size": f"{side}x{side}"}


def build_report(run_dir: str | Path, out: str | Path | None = None, *, device: str | None = None,
                 precision: str = "fp32") -> Path:
    """Write the run's HTML report (default `<run>/report.html`), evaluating it first where needed."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a seglab run folder (no config.yaml)")
    # The checkpoint is read and the datasets built once, for the evaluations and the gallery alike.
    checkpoint = checkpoint_path(run_dir)
    saved, identity = read_checkpoint_and_sha256(checkpoint)
    predictor = predictor_from_checkpoint(saved, checkpoint, device=device, precision=precision)
    return write_report(run_dir, predictor, run_datasets(saved, checkpoint), checkpoint, identity, out)


def write_report(run_dir: Path, predictor: Predictor, datasets: Mapping[str, Dataset], checkpoint: Path,
                 identity: str, out: str | Path | None = None) -> Path:
    """`build_report` with the run's predictor and datasets already at hand (the demo has them); `identity` is the
    sha256 of the checkpoint bytes the predictor was loaded from. Splits whose metrics.json scored those bytes
    are not scored again."""
    import jinja2

    out = Path(out) if out is not None else run_dir / "report.html"
    metrics = ensure_evaluations(run_dir, predictor, datasets, checkpoint, identity)
    model = _model_row(predictor)
    class_names = list(predictor.class_names)
    history = _history(run_dir)
    last = history[-1] if history else {}
    seconds = float(last.get("elapsed_s") or 0.0)
    images = int(float(last.get("images_seen") or 0))
    gallery_split = "test" if "test" in metrics else "val"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        _class_bars(metrics, class_names, folder / "classes.png")
        best, worst = _gallery(run_dir, gallery_split, predictor, datasets[gallery_split], folder)
        curves = run_dir / "training_curves.png"
        context = {
            "run_name": run_dir.name,
            "model_name": model["name"],
            "class_names": class_names,
            "generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "cards": [{"label": f"{split} mIoU", "value": f"{_percent(values['miou'])} %"}
                      for split, values in metrics.items()]
                     + [{"label": f"{split} pixel accuracy", "value": f"{_percent(values['pixel_accuracy'])} %"}
                        for split, values in metrics.items()],
            "model": model,
            "run": {"wall_time": f"{seconds / 60:.1f} min" if seconds else "n/a", "images": images or "n/a",
                    "images_per_s": f"{images / seconds:.1f}" if seconds else "n/a"},
            "curves": png_data_uri(curves) if curves.is_file() else None,
            "splits": [{"title": split, "about": f"{values.get('images')} images, {values.get('precision')}, "
                        f"{Path(str(values.get('checkpoint'))).name}"} for split, values in metrics.items()],
            "metric_rows": [{"label": label, "cells": [_percent(values.get(key)) for values in metrics.values()]}
                            for key, label in SUMMARY_METRICS],
            "class_rows": [{"name": name, "cells": [value for values in metrics.values() for value in (
                _percent(values["per_class"][name]["iou"]), _percent(values["per_class"][name]["dice"]))]}
                for name in class_names],
            "class_bars": png_data_uri(folder / "classes.png"),
            "confusion_split": gallery_split,
            "confusion": png_data_uri(run_dir / "evaluate" / gallery_split / "confusion_matrix.png"),
            "gallery_split": gallery_split,
            "best": png_data_uri(best),
            "worst": png_data_uri(worst),
            "config_text": (run_dir / "config.yaml").read_text(encoding="utf-8"),
        }
    environment = jinja2.Environment(loader=jinja2.PackageLoader("seglab.evaluation", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    html = environment.get_template(TEMPLATE).render(**context)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, html)
    return out
