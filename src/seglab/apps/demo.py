"""`seglab demo`: DeepLabV3+ (aligned Xception-41) trained from scratch on shapes v1 under a time budget,
then evaluated on the test split with the predicted masks and a grid PNG written to `runs/demo/results/`.

The recipe is `demo.yaml` beside this file (shipped with the package); the choices it makes were measured by
benchmarks/results/time_to_accuracy.md and steps_to_accuracy.md (INDEX.md there: the commands).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from seglab.errors import ConfigError
from seglab.training import TrainConfig, make_config

DEMO_RECIPE = Path(__file__).with_name("demo.yaml")
CPU_MINUTES = 10.0
GRID_IMAGES = 8
GPU_MINUTES = 3.0
# The command named in the run folder's marker: a folder the demo made is the demo's to replace.
DEMO_CREATOR = "seglab demo"


@dataclass
class DemoResult:
    run_dir: Path
    scores: dict[str, torch.Tensor]
    table: str


def demo_recipe() -> dict[str, Any]:
    """The recipe's keys and values as written in `demo.yaml`."""
    return yaml.safe_load(DEMO_RECIPE.read_text(encoding="utf-8"))


def demo_config(minutes: float | None = None, **overrides: Any) -> TrainConfig:
    """The demo recipe with a `minutes` budget (default 10 on a CPU, 3 with a GPU) and any overrides."""
    if minutes is None:
        minutes = GPU_MINUTES if torch.cuda.is_available() else CPU_MINUTES
    return make_config(demo_recipe(), max_minutes=minutes, **overrides)


def run_demo(config: TrainConfig, *, overwrite: bool = False, echo=print) -> DemoResult:
    """Train `config`; training ends by scoring best.ckpt on the test split once, and that one pass also saves
    the predicted test masks and an image / prediction / truth grid. The report reuses the same predictor,
    datasets and scores.

    The run folder is replaced without asking only where an earlier demo made it (its marker says so); any other
    non-empty folder is refused unless `overwrite`, and even then only a seglab run folder is replaced."""
    from seglab.evaluation.checkpoint import IDENTITY_KEY
    from seglab.evaluation.html_report import write_report
    from seglab.evaluation.plots import save_prediction_grid, spread_indices
    from seglab.inference.files import save_mask_png
    from seglab.training import train
    from seglab.training.run import LOCK_NAME, is_run_folder, run_dir_of, run_marker

    run_dir = run_dir_of(config)
    in_use = run_dir.is_dir() and any(path.name != LOCK_NAME for path in run_dir.iterdir())
    made_by_demo = (run_marker(run_dir) or {}).get("created_by") == DEMO_CREATOR
    if in_use and not made_by_demo and not (overwrite and is_run_folder(run_dir)):
        what = ("another seglab run: pass --overwrite to replace it" if is_run_folder(run_dir) else
                "not a seglab run folder, so it is never emptied (not even with --overwrite)")
        raise ConfigError(f"{run_dir} already exists and was not made by `seglab demo`; it is {what}, or give "
                          "another --runs-dir or --set name=...")

    echo(f"seglab demo: training {config.model} from scratch on shapes v1 at {config.data.image_size} px "
         f"for {config.max_minutes:g} min ({Path(config.runs_dir) / config.name})")
    predictions: dict[int, np.ndarray] = {}
    scored: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def keep_prediction(index: int, image: torch.Tensor, prediction: torch.Tensor, truth: torch.Tensor) -> None:
        predictions[index] = prediction.numpy().astype(np.uint8)
        scored[index] = (image, prediction, truth)  # the demo's test split is small: the grid picks afterwards

    result = train(config, overwrite=True, on_test_scored=keep_prediction, created_by=DEMO_CREATOR)
    test = result.test
    if test is None or result.best_checkpoint is None:  # a test evaluation means a best.ckpt: both or neither
        raise ConfigError("the demo run ended without a validation, so there is no best.ckpt to evaluate; give it "
                          "more --minutes")
    results = result.run_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    for index, prediction in predictions.items():
        save_mask_png(prediction, results / f"{index:03d}.png", test.predictor.palette)
    order = sorted(scored)
    grid_rows = [scored[order[position]] for position in spread_indices(len(order), GRID_IMAGES)]
    images, labels, truths = (torch.stack(column) for column in zip(*grid_rows, strict=True))
    save_prediction_grid(images, labels, truths, results / "grid.png", test.predictor.palette,
                         test.predictor.class_names)
    report = write_report(result.run_dir, test.predictor, result.datamodule.datasets, result.best_checkpoint,
                          test.metrics[IDENTITY_KEY])
    echo(test.table)
    echo(f"predicted masks: {results}/NNN.png; grid (image | prediction | truth): {results / 'grid.png'}; "
         f"reports: {test.out}")
    echo(f"report: {report} (open it in a browser: file://{report.resolve()})")
    return DemoResult(result.run_dir, test.evaluation.scores, test.table)
