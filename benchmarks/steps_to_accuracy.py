"""Steps to accuracy: DeepLabV3+ trained from scratch on shapes v1 for a budget of optimizer steps.

A ten-minute CPU run tests one recipe; accuracy per optimizer step does not depend on the device, so recipes are
screened here under a *step* budget, on whatever device is at hand (one H100 ran five CPU-budget recipes side by
side in under three minutes), and the best are then confirmed by `time_to_accuracy.py` on the CPU. Every snapshot
is priced in seconds of the 2-core CPU's training step (results/cpu_step_seconds.csv, measured with
`--measure-cpu-step`), so a screened recipe can be compared with the CPU's ten-minute budget before it is run there.

Trains the `seglab demo` recipe with `--set` changes for `--steps` optimizer steps; `progressive_resize` shares
are then shares of the steps. Selection uses validation data only: every validation appends a row with the val
scores (the engine's validation, at the scale the test split is predicted at) to
benchmarks/results/steps_to_accuracy.csv at once; at the end, the checkpoint with the best val mIoU (best.ckpt)
is scored once on the 100-image test split (fp32), the run's reported figure, in a last row.

    python benchmarks/steps_to_accuracy.py --steps 1175 --label base \
        --set "progressive_resize=[[0,64],[0.52,96],[0.79,128]]"
    python benchmarks/steps_to_accuracy.py --measure-cpu-step      # refresh results/cpu_step_seconds.csv on the CPU
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback

import seglab
from common import RESULTS, append_rows, interleaved_seconds, read_rows, recipe_settings
from seglab.apps.demo import demo_recipe
from seglab.data import ShapesDataset
from seglab.evaluation.loop import evaluate
from seglab.evaluation.metrics import SegmentationMetrics
from seglab.models import build_model
from seglab.training import training_step
from seglab.training.callbacks import EpochHistory
from seglab.training.config import make_config, parse_overrides
from seglab.training.losses import build_loss
from seglab.training.optim import build_optimizer
from seglab.training.run import train

# `row_kind`: "validation" (val scores only), "best_by_val_tested_once" (best.ckpt, chosen by val mIoU, scored on
# the test split once). Rows written before this protocol are "screen_test_every_validation": the test split was
# scored at every validation and the screen ranked recipes by it (see steps_to_accuracy.md).
COLUMNS = ("label", "row_kind", "step", "images_seen", "cpu_seconds", "val_miou", "val_pixel_accuracy", "test_miou",
           "test_pixel_accuracy", "budget_steps", "device", "settings")
STEP_PRICES = RESULTS / "cpu_step_seconds.csv"


def step_prices() -> dict[tuple[int, int, int], float]:
    """Median seconds of one CPU training step by (batch size, output stride, side), from `--measure-cpu-step`."""
    return {(int(row["batch_size"]), int(row["output_stride"]), int(row["side"])): float(row["seconds"])
            for row in read_rows(STEP_PRICES)}


def cpu_seconds(config, steps: int, prices: dict[tuple[int, int, int], float]) -> float | None:
    """Price of the first `steps` optimizer steps on the 2-core CPU; None where a step shape was not measured."""
    total = 0.0
    for step in range(steps):
        key = (config.batch_size, config.output_stride or 16, config.training_side(step / config.max_steps))
        if key not in prices:
            return None
        total += prices[key]
    return total


def measure_cpu_step() -> None:
    """Time seglab's training step (the demo recipe's model, loss and optimiser; bf16) at every shape in
    cpu_step_seconds.csv and rewrite the file with this machine's figures."""
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    rows = []
    for (batch, stride, side) in step_prices():
        torch.manual_seed(0)
        config = make_config(demo_recipe(), batch_size=batch, output_stride=stride)
        model = build_model(config.model, num_classes=4, **config.model_options()).train()
        loss, optimizer = build_loss(config.loss), build_optimizer(config, model.parameters())
        images, masks = torch.rand(batch, 3, side, side), torch.randint(0, 4, (batch, side, side))
        def step(model=model, images=images, masks=masks, loss=loss, optimizer=optimizer) -> None:
            training_step(model, images, masks, loss, optimizer, precision="bf16")

        seconds = interleaved_seconds({"step": step}, repeats=8)["step"]
        rows.append({"batch_size": batch, "output_stride": stride, "side": side, "seconds": round(seconds, 3),
                     "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": machine})
        print(rows[-1], f"load {os.getloadavg()[0]:.2f}", flush=True)
    STEP_PRICES.unlink()
    append_rows(STEP_PRICES, rows)


def resolution_ceiling(sides: tuple[int, ...] = (48, 56, 64, 72, 80, 96)) -> None:
    """What predicting at a smaller side costs by itself: the true masks as class shares at `side` px (what a
    perfect model there would output), resized back to 128 px bilinearly like the logits, scored on the test split."""
    test = ShapesDataset("test", size=128)
    masks = torch.stack([test[i][1] for i in range(len(test))])
    shares = F.one_hot(masks, test.num_classes).permute(0, 3, 1, 2).float()
    for side in sides:
        small = F.interpolate(shares, size=(side, side), mode="area")
        resized = F.interpolate(small, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        metrics = SegmentationMetrics(test.num_classes)
        metrics.update(resized, masks)
        print(f"perfect at {side} px, resized to 128 px: test mIoU {float(metrics.compute()['miou']):.4f}")


class ValidationRows(Callback):
    """Appends each validation's row at once, so an interrupted screening run keeps what it measured. The test
    split is not looked at during training."""

    def __init__(self, config, label: str, settings: str, results: Path) -> None:
        self.config, self.label, self.settings, self.results = config, label, settings, results
        self.prices = step_prices()

    def row(self, history: dict, device: torch.device, **scores) -> dict:
        cost = cpu_seconds(self.config, int(history["step"]), self.prices)
        return {"label": self.label, "row_kind": "validation", "step": int(history["step"]),
                "images_seen": int(history["images_seen"]), "cpu_seconds": None if cost is None else round(cost, 1),
                "val_miou": round(history["val_miou"], 4),
                "val_pixel_accuracy": round(history["val_pixel_accuracy"], 4),
                "budget_steps": self.config.max_steps, "device": _device_name(device), "settings": self.settings,
                **scores}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        # EpochHistory comes before the extra callbacks, so its row for this validation is already there.
        history = next(c for c in trainer.callbacks if isinstance(c, EpochHistory)).rows[-1]
        row = self.row(history, pl_module.device)
        print(f"{self.label}: step {row['step']:5d}  CPU {row['cpu_seconds']} s  val mIoU {row['val_miou']:.4f}",
              flush=True)
        append_rows(self.results, [row], COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="optimizer steps to train")
    parser.add_argument("--label", help="name of this run in the results table")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="changes to the demo recipe, as for `seglab train --set`")
    parser.add_argument("--runs-dir", default="runs/benchmarks", help="where the run folders go")
    parser.add_argument("--results", type=Path, default=RESULTS / "steps_to_accuracy.csv", help="CSV to append to")
    parser.add_argument("--measure-cpu-step", action="store_true",
                        help="time the training step at every shape of results/cpu_step_seconds.csv and rewrite it")
    parser.add_argument("--resolution-ceiling", action="store_true",
                        help="print the test mIoU of perfect predictions made at smaller sides, resized to 128 px")
    args = parser.parse_args()
    if args.measure_cpu_step:
        measure_cpu_step()
        return
    if args.resolution_ceiling:
        resolution_ceiling()
        return
    if args.steps is None or args.label is None:
        parser.error("--steps and --label are required")

    changed = parse_overrides(args.overrides)
    config = make_config(demo_recipe(), **{"max_minutes": None, "max_steps": args.steps, "progress_bar": False,
                                           "name": f"sta_{args.label}", "runs_dir": args.runs_dir,
                                           "test_after_training": False, **changed})
    recorder = ValidationRows(config, args.label, recipe_settings(config, changed), args.results)
    result = train(config, overwrite=True, extra_callbacks=[recorder])
    if result.best_checkpoint is None:
        raise SystemExit(f"{args.label}: no validation ran in {args.steps} steps, so nothing was selected")
    # best.ckpt is the first validation with the highest val mIoU (ModelCheckpoint keeps the first of equals).
    best = max(result.history, key=lambda row: row["val_miou"])
    device = result.module.device
    predictor = seglab.load(result.best_checkpoint, device=device, precision="fp32", batch_size=25)
    test = ShapesDataset("test", size=config.data.image_size, seed=config.seed)
    scores = evaluate(predictor, test).scores
    row = recorder.row(best, device, row_kind="best_by_val_tested_once", test_miou=round(float(scores["miou"]), 4),
                       test_pixel_accuracy=round(float(scores["pixel_accuracy"]), 4))
    print(f"{args.label}: best val mIoU {row['val_miou']:.4f} at step {row['step']}; its test mIoU "
          f"{row['test_miou']:.4f}", flush=True)
    append_rows(args.results, [row], COLUMNS)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


if __name__ == "__main__":
    main()
