"""Steps to accuracy: test mIoU of DeepLabV3+ trained from scratch on shapes v1 against optimizer steps.

A ten-minute CPU run tests one recipe; accuracy per optimizer step does not depend on the device, so recipes are
screened here under a *step* budget, on whatever device is at hand (one H100 ran five CPU-budget recipes side by
side in under three minutes), and the best are then confirmed by `time_to_accuracy.py` on the CPU. Every snapshot
is priced in seconds of the 2-core CPU's training step (`CPU_STEP_SECONDS`, measured with `--measure-cpu-step`),
so a screened recipe can be compared with the CPU's ten-minute budget before it is run there.

Trains the `seglab demo` recipe with `--set` changes for `--steps` optimizer steps; `progressive_resize` shares
are then shares of the steps. At every validation the weights are also scored on the 100-image test split
(fp32) and a row is appended to benchmarks/results/steps_to_accuracy.csv at once.

    python benchmarks/steps_to_accuracy.py --steps 1175 --label base \
        --set "progressive_resize=[[0,64],[0.52,96],[0.79,128]]"
    python benchmarks/steps_to_accuracy.py --measure-cpu-step      # refresh CPU_STEP_SECONDS on the CPU
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import io
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback

from cpu_kernels import interleaved_ms, training_step
from seglab.data import ShapesDataset
from seglab.evaluation.metrics import SegmentationMetrics
from seglab.evaluation.reports import evaluate
from seglab.inference import Predictor
from seglab.training.callbacks import EpochHistory
from seglab.training.config import make_config, parse_overrides
from seglab.training.demo import DEMO_RECIPE
from seglab.training.run import train
from time_to_accuracy import describe

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("label", "step", "images_seen", "cpu_seconds", "val_miou", "test_miou", "test_pixel_accuracy",
           "budget_steps", "device", "settings")

# Median seconds of one training step (forward, backward, fused AdamW; bf16 autocast, Xception-41 OS 16,
# 4 classes, CE + Dice, 2 torch threads) by (batch size, output stride, side), from `--measure-cpu-step` on the
# 2-core AMD EPYC development machine, torch 2.13.0+cpu.
CPU_STEP_SECONDS = {
    (4, 16, 64): 0.19,
    (4, 16, 96): 0.269,
    (4, 16, 128): 0.375,
    (8, 16, 64): 0.261,
    (8, 16, 96): 0.412,
    (8, 16, 128): 0.661,
    (16, 16, 48): 0.334,
    (16, 16, 56): 0.38,
    (16, 16, 64): 0.408,
    (16, 16, 72): 0.563,
    (16, 16, 80): 0.605,
    (16, 16, 96): 0.731,
    (16, 16, 128): 1.259,
    (24, 16, 64): 0.563,
    (32, 16, 48): 0.55,
    (32, 16, 64): 0.752,
    (8, 8, 64): 0.516,
    (8, 8, 96): 0.913,
    (8, 8, 128): 1.631,
}


def cpu_seconds(config, steps: int) -> float | None:
    """Price of the first `steps` optimizer steps on the 2-core CPU; None where a step shape was not measured."""
    total = 0.0
    for step in range(steps):
        key = (config.batch_size, config.output_stride or 16, config.training_side(step / config.max_steps))
        if key not in CPU_STEP_SECONDS:
            return None
        total += CPU_STEP_SECONDS[key]
    return total


def measure_cpu_step() -> None:
    for (batch, stride, side) in CPU_STEP_SECONDS:
        step = training_step(plain_depthwise=False, fused=True, size=side, batch=batch, output_stride=stride,
                             loss="ce_dice")
        seconds = interleaved_ms({"step": step}, repeats=8)["step"] / 1000
        print(f"    ({batch}, {stride}, {side}): {seconds:.3f},  "
              f"# {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="optimizer steps to train")
    parser.add_argument("--label", help="name of this run in the results table")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="changes to the demo recipe, as for `seglab train --set`")
    parser.add_argument("--runs-dir", default="runs/benchmarks", help="where the run folders go")
    parser.add_argument("--results", type=Path, default=RESULTS / "steps_to_accuracy.csv", help="CSV to append to")
    parser.add_argument("--measure-cpu-step", action="store_true", help="print CPU_STEP_SECONDS for this machine")
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
    config = make_config(DEMO_RECIPE, **{"max_minutes": None, "max_steps": args.steps, "progress_bar": False,
                                         "name": f"sta_{args.label}", "runs_dir": args.runs_dir, **changed})
    scorer = TestScores(config, args.label, describe(config, changed), args.results)
    train(config, overwrite=True, extra_callbacks=[scorer])


class TestScores(Callback):
    """Scores the weights on the test split (fp32) at every validation and appends the row at once, so an
    interrupted screening run keeps what it measured."""

    def __init__(self, config, label: str, settings: str, results: Path) -> None:
        self.config, self.label, self.settings, self.results = config, label, settings, results
        self.test = ShapesDataset("test", size=config.image_size, seed=config.seed)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        history = next(c for c in trainer.callbacks if isinstance(c, EpochHistory)).rows[-1]
        device = pl_module.device
        was_training = pl_module.training
        pl_module.eval()
        # The module predicts at its inference_size (by default the last training side), as in the demo.
        with torch.autocast(device.type, enabled=False):
            scores = evaluate(Predictor(pl_module.model, pl_module.spec, device=device, batch_size=25),
                              self.test).scores
        pl_module.train(was_training)
        cost = cpu_seconds(self.config, trainer.global_step)
        row = {"label": self.label, "step": trainer.global_step, "images_seen": int(history["images_seen"]),
               "cpu_seconds": None if cost is None else round(cost, 1), "val_miou": round(history["val_miou"], 4),
               "test_miou": round(float(scores["miou"]), 4),
               "test_pixel_accuracy": round(float(scores["pixel_accuracy"]), 4),
               "budget_steps": self.config.max_steps, "device": _device_name(device), "settings": self.settings}
        print(f"{self.label}: step {row['step']:5d}  CPU {row['cpu_seconds']} s  test mIoU {row['test_miou']:.4f}",
              flush=True)
        self.results.parent.mkdir(parents=True, exist_ok=True)
        # Parallel screening processes append to the same file: one locked write per row.
        with open(self.results, "a", newline="", encoding="utf-8") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
            if file.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
            file.write(buffer.getvalue())


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


if __name__ == "__main__":
    main()
