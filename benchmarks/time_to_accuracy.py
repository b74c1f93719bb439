"""Time to accuracy: test mIoU of DeepLabV3+ trained from scratch on shapes v1 (128 px) against wall-clock time.

Trains the `seglab demo` recipe (or it with `--set` changes) for `--minutes`, keeps a copy of the weights at
every validation (cheap, so the training clock is not disturbed), then scores each copy on the 100-image test
split. Appends one row per copy to benchmarks/results/time_to_accuracy.csv; the curated summary of those rows is
benchmarks/results/time_to_accuracy.md, edited by hand. The test column is a learning curve for the record: choose
between recipes by `val_miou` (the engine's validation, predicted as the test split is), as
`steps_to_accuracy.py` does.

    python benchmarks/time_to_accuracy.py --minutes 10 --label final
    python benchmarks/time_to_accuracy.py --minutes 3 --label fp32 --set precision=32-true
"""

from __future__ import annotations

import argparse
import copy
import os
import platform

import torch
from lightning.pytorch import Callback

from common import RESULTS, append_rows, recipe_settings
from seglab.apps.demo import demo_config
from seglab.data import ShapesDataset
from seglab.evaluation.loop import evaluate
from seglab.inference import Predictor
from seglab.training.config import parse_overrides
from seglab.training.run import train

COLUMNS = ("label", "minutes", "images_seen", "images_per_s", "val_miou", "test_miou", "test_pixel_accuracy",
           "budget_min", "load_before", "settings")


class Snapshots(Callback):
    """A CPU copy of the weights at every validation; the run's history rows say when and after what."""

    def __init__(self) -> None:
        self.states: list[dict] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.states.append({k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (default 10)")
    parser.add_argument("--label", required=True, help="name of this run in the results table")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="changes to the demo recipe, as for `seglab train --set`")
    parser.add_argument("--runs-dir", default="runs/benchmarks", help="where the run folders go")
    parser.add_argument("--also-score-at", type=int, metavar="SIDE",
                        help="also score every snapshot on the test split generated at SIDE px (printed only)")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    changed = parse_overrides(args.overrides)
    config = demo_config(args.minutes, name=f"tta_{args.label}", runs_dir=args.runs_dir,
                         **{"progress_bar": False, **changed})
    snapshots = Snapshots()
    result = train(config, overwrite=True, extra_callbacks=[snapshots])
    module = result.module.cpu().eval()
    test = ShapesDataset("test", size=config.data.image_size, seed=config.seed)
    other_test = ShapesDataset("test", size=args.also_score_at, seed=config.seed) if args.also_score_at else None
    settings = recipe_settings(config, changed)

    def test_scores(model, dataset: ShapesDataset) -> dict:
        return evaluate(Predictor(model.model, model.spec, device="cpu", batch_size=25), dataset).scores

    rows = []
    # EpochHistory and Snapshots both record once per validation of the fit, so they pair up one to one.
    for row, state in zip(result.history, snapshots.states, strict=True):
        seconds, images, val_miou = row["elapsed_s"], int(row["images_seen"]), row["val_miou"]
        model = copy.deepcopy(module)
        model.load_state_dict(state)
        scores = test_scores(model, test)
        rows.append({"label": args.label, "minutes": round(seconds / 60, 2), "images_seen": images,
                     "images_per_s": round(images / max(seconds, 1e-9), 2), "val_miou": round(val_miou, 4),
                     "test_miou": round(float(scores["miou"]), 4),
                     "test_pixel_accuracy": round(float(scores["pixel_accuracy"]), 4),
                     "budget_min": args.minutes, "load_before": round(load_before, 2), "settings": settings})
        line = f"{rows[-1]['minutes']:6.2f} min  {images:6d} images  test mIoU {rows[-1]['test_miou']:.4f}"
        if other_test is not None:
            line += f"  (at {args.also_score_at} px: {float(test_scores(model, other_test)['miou']):.4f})"
        print(line)
    csv_path = RESULTS / "time_to_accuracy.csv"
    append_rows(csv_path, rows, COLUMNS)
    print(f"appended {len(rows)} rows to {csv_path} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load {load_before:.2f} before)")


if __name__ == "__main__":
    main()
