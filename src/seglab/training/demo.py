"""`seglab demo`: DeepLabV3+ (aligned Xception-41) trained from scratch on shapes v1 under a time budget,
then evaluated on the test split with the predicted masks and a grid PNG written to `runs/demo/results/`.

The recipe is the one `benchmarks/time_to_accuracy.py` measured; see benchmarks/results/time_to_accuracy.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.errors import ConfigError
from seglab.training.config import TrainConfig, make_config

# The time-to-accuracy recipe (benchmarks/results/time_to_accuracy.md says what each choice bought).
DEMO_RECIPE: dict[str, Any] = {
    "name": "demo",
    "dataset": "shapes",
    "image_size": 128,
    "train_length": 100_000,  # fresh procedural samples: no image is seen twice in 10 minutes
    "model": "deeplabv3plus_xception41",  # as fast as Xception-65 on a CPU and as accurate per step
    "output_stride": 16,  # output stride 8 costs 2.7x the time per step
    "zero_init_residual": True,  # residual blocks start as their shortcuts: the deep net starts shallow
    # Train on the 128 px images shrunk to 64 px, and predict at that scale too (inference_size follows the
    # last training side). A step of 16 at 64 px costs 0.6x a step of 8 at 128 px and teaches more: 0.87 test
    # mIoU in the CPU budget's steps against 0.78 at 128 px (benchmarks/results/steps_to_accuracy.md).
    # Shrinking costs nothing in the masks: perfect 64 px predictions resized to 128 px score 0.994 mIoU.
    "progressive_resize": [[0.0, 64]],
    "loss": "ce_dice",  # Dice pulls the model out of the "all background" start sooner than CE alone
    "optimizer": "adamw",
    "lr": 2e-2,  # 1e-2 to 4e-2 score alike; 1e-3 reached 0.29 (time_to_accuracy.md)
    "weight_decay": 1e-4,
    "scheduler": "onecycle",  # follows the clock: warm-up over the first 15 %, cosine down to the end
    "onecycle_pct_start": 0.15,
    "batch_size": 16,  # at 64 px a step of 16 costs 1.6x a step of 8 and teaches more (0.869 vs 0.853)
    "precision": "auto",  # bf16-mixed on this CPU: 1.46x the fp32 speed
    "max_epochs": None,  # the wall-clock budget ends training
    "limit_train_batches": 160,  # an "epoch" is 2560 images: a validation (and best.ckpt) about once a minute
}
CPU_MINUTES = 10.0
GPU_MINUTES = 3.0


@dataclass
class DemoResult:
    run_dir: Path
    scores: dict[str, torch.Tensor]
    table: str


def demo_config(minutes: float | None = None, **overrides: Any) -> TrainConfig:
    """The demo recipe with a `minutes` budget (default 10 on a CPU, 3 with a GPU) and any overrides."""
    if minutes is None:
        minutes = GPU_MINUTES if torch.cuda.is_available() else CPU_MINUTES
    return make_config(DEMO_RECIPE, max_minutes=minutes, **overrides)


def run_demo(config: TrainConfig, *, echo=print) -> DemoResult:
    """Train `config` (overwriting its run folder; training ends by scoring best.ckpt on the test split), then
    save the predicted test masks and an image / prediction / truth grid."""
    from seglab.data import ShapesDataset
    from seglab.evaluation.plots import save_prediction_grid
    from seglab.evaluation.report import build_report
    from seglab.inference import load
    from seglab.inference.files import save_mask_png
    from seglab.training.run import train

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
