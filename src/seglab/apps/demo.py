"""`seglab demo`: DeepLabV3+ (aligned Xception-41) trained from scratch on shapes v1 under a time budget,
then evaluated on the test split with the predicted masks and a grid PNG written to `runs/demo/results/`.

The recipe is `demo.yaml` beside this file (shipped with the package); the choices it makes were measured by
`benchmarks/time_to_accuracy.py` and `benchmarks/steps_to_accuracy.py` (see benchmarks/results/).
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
GPU_MINUTES = 3.0


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


def run_demo(config: TrainConfig, *, echo=print) -> DemoResult:
    """Train `config` (overwriting its run folder; training ends by scoring best.ckpt on the test split), then
    save the predicted test masks and an image / prediction / truth grid."""
    from seglab.data import ShapesDataset
    from seglab.evaluation.plots import save_prediction_grid
    from seglab.evaluation.report import build_report
    from seglab.inference import load
    from seglab.inference.files import save_mask_png
    from seglab.training import train

    echo(f"seglab demo: training {config.model} from scratch on shapes v1 at {config.image_size} px "
         f"for {config.max_minutes:g} min ({Path(config.runs_dir) / config.name})")
    result = train(config, overwrite=True)
    if result.test is None:
        raise ConfigError("the demo run ended without a validation, so there is no best.ckpt to evaluate; give it "
                          "more --minutes")
    predictor = load(result.best_checkpoint, precision=result.test.metrics["precision"])
    test = ShapesDataset("test", size=config.image_size, seed=config.seed)
    images = torch.stack([test[i][0] for i in range(len(test))])
    predictions = predictor.predict(images)
    results = result.run_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    for index, prediction in enumerate(predictions):
        save_mask_png(prediction, results / f"{index:03d}.png", predictor.palette)
    count = min(8, len(test))
    save_prediction_grid(images[:count], torch.from_numpy(np.stack(predictions[:count])),
                         torch.stack([test[i][1] for i in range(count)]), results / "grid.png", predictor.palette,
                         predictor.class_names)
    scores = result.test.evaluation.scores
    _write_scores(results / "test_metrics.csv", scores, test.class_names)
    report = build_report(result.run_dir, precision=predictor.precision)
    echo(result.test.table)
    echo(f"predicted masks: {results}/NNN.png; grid (image | prediction | truth): {results / 'grid.png'}; "
         f"reports: {result.test.out}")
    echo(f"report: {report} (open it in a browser: file://{report.resolve()})")
    return DemoResult(result.run_dir, scores, result.test.table)


def _write_scores(path: Path, scores: dict[str, torch.Tensor], class_names: list[str]) -> None:
    lines = ["metric,value"]
    lines += [f"{key},{float(scores[key]):.6f}" for key in ("pixel_accuracy", "mean_class_accuracy", "miou")]
    lines += [f"iou_{name},{float(iou):.6f}" for name, iou in zip(class_names, scores["iou_per_class"], strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
