"""The backbone table (seed 003: compare backbones "by parameters, speed and final results"), from one command:

    python benchmarks/backbones.py --root DATA --minutes 8     # -> results/backbones.md (and real_data.jsonl)

For each model: parameters and forward GFLOPs at the facade recipe's working size (256x256 crops, 9 classes;
`seglab.models.summary`), training images/s (`seglab.training.training_step`, bf16 + channels-last, batch 8 of
256x256, fused AdamW) and inference images/s (`seglab.inference.predict_logits`, bf16 + channels-last, one
683x512 photograph) with both cores, and facade test mIoU after the same wall-clock budget each: the shipped
recipe (configs/labelmefacade.yaml) with only `model` changed, trained by `benchmarks/real_data.py` on the fixed
re-split, two models at a time on one core each, best.ckpt chosen on val, the test split scored once.
The DeepLabV3+ models train at the recipe's output stride 32; Xception-41/65 at output stride 16 and
Xception-65 at 8 (the paper's settings) get their parameters, FLOPs and speeds only: they cost several times
the FLOPs, and an equal-minutes result for them would say little more than "fewer steps".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, cpu_name, interleaved_seconds, read_rows
from real_data import BACKBONE_RUN_PREFIX, LOG

MODELS = ["fcn_vgg16", "deeplabv3plus_xception41", "deeplabv3plus_xception65", "deeplabv3plus_resnet50"]
CLASSES = 9
CROP = (256, 256)  # the facade recipe's training crops
# The recipe's output stride (32) for the DeepLabV3+ models; the FCN has none to set.
MODEL_OPTIONS = {name: {"output_stride": 32} for name in MODELS if name.startswith("deeplabv3plus")}
# The recipe's settings a model does not take (the FCN has neither), set to values that mean "off" for it.
RECIPE_ONLY_OPTIONS = {"output_stride": "null", "zero_init_residual": "false"}
# Rows measured for cost only: (model, output stride).
COST_ONLY = [("deeplabv3plus_xception41", 16), ("deeplabv3plus_xception65", 16), ("deeplabv3plus_xception65", 8)]
PHOTO = (512, 683)
HERE = Path(__file__).resolve().parent


def budget_runs(root: str, minutes: float) -> dict[str, dict]:
    """Each model trained for `minutes` by real_data.py, two at a time, one core each; their records."""
    from seglab.models import model_options

    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for first in range(0, len(MODELS), 2):
        processes = [subprocess.Popen(["taskset", "-c", str(core), sys.executable, str(HERE / "real_data.py"),
                                       "--root", root, "--arm", "seglab", "--minutes", str(minutes),
                                       "--name", f"{BACKBONE_RUN_PREFIX}{model}", "--set", f"model={model}",
                                       *(f"{option}={off}" for option, off in RECIPE_ONLY_OPTIONS.items()
                                         if option not in model_options(model))],
                                      env=environment)
                     for core, model in enumerate(MODELS[first:first + 2])]
        if any([process.wait() for process in processes]):  # a list: wait for every one, not the first failure
            sys.exit("a budget run failed (above)")
    return logged_runs(minutes)


def logged_runs(minutes: float) -> dict[str, dict]:
    """The budget runs of `minutes` in real_data.jsonl, by model (the latest of each)."""
    return {record["name"].removeprefix(BACKBONE_RUN_PREFIX): record for record in read_rows(LOG)
            if record["name"].startswith(BACKBONE_RUN_PREFIX) and record.get("minutes") == minutes}


def speeds(model_name: str, model: torch.nn.Module, rounds: int) -> tuple[float, float]:
    """(training, inference) images/s of `model` (built as `model_name`) with every core."""
    from seglab.inference.predictor import predict_logits
    from seglab.inference.spec import InferenceSpec
    from seglab.training.losses import build_loss
    from seglab.training.step import training_step

    model = model.to(memory_format=torch.channels_last)
    images = torch.rand(8, 3, *CROP).contiguous(memory_format=torch.channels_last)
    masks = torch.randint(CLASSES, (8, *CROP))
    loss = build_loss("ce")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    spec = InferenceSpec(model=model_name, model_options={}, num_classes=CLASSES,
                         class_names=tuple(f"class_{i}" for i in range(CLASSES)),
                         palette=tuple((i, i, i) for i in range(CLASSES)), channels_last=True)
    photo = torch.rand(1, 3, *PHOTO)

    def train_step() -> None:
        model.train()
        training_step(model, images, masks, loss, optimizer, precision="bf16")

    def predict() -> None:
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            predict_logits(model, photo, spec)

    seconds = interleaved_seconds({"train": train_step, "predict": predict}, rounds, warmup=1)
    return 8 / seconds["train"], 1 / seconds["predict"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the LabelMeFacade folder")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per model")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per speed figure")
    parser.add_argument("--skip-training", action="store_true", help="reuse budget runs already logged")
    args = parser.parse_args()
    from seglab.models import build_model
    from seglab.models.summary import count_parameters, forward_gflops

    runs = logged_runs(args.minutes) if args.skip_training else budget_runs(args.root, args.minutes)
    lines = ["# Backbones on LabelMeFacade: parameters, speed, results", "",
             f"`python benchmarks/backbones.py --root DATA --minutes {args.minutes:g}` on {cpu_name()}, "
             f"{time.strftime('%Y-%m-%d')}. Speeds with both cores (bf16 + channels-last): training batch 8 of "
             f"{CROP[0]}x{CROP[1]}, inference one {PHOTO[1]}x{PHOTO[0]} photograph. Facade mIoU: the shipped recipe "
             f"with `model` changed, {args.minutes:g} minutes of training on one core each (two models at a time), "
             "best.ckpt on val, test split (300 images, full resolution) scored once. DeepLabV3+ trains at the "
             "recipe's output stride 32; the OS16/OS8 rows (the paper's settings) are measured for cost only.", "",
             f"| model | parameters | GFLOPs @ {CROP[0]}x{CROP[1]} | training images/s | inference images/s | "
             f"steps in {args.minutes:g} min | val mIoU | test mIoU | thin-class mIoU |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [(name, MODEL_OPTIONS.get(name, {}), runs.get(name, {})) for name in MODELS]
    rows += [(name, {"output_stride": stride}, None) for name, stride in COST_ONLY]
    for name, options, run in rows:
        torch.manual_seed(0)
        model = build_model(name, num_classes=CLASSES, **options)
        parameters, gflops = count_parameters(model) / 1e6, forward_gflops(model, CROP[0])
        train_rate, predict_rate = speeds(name, model, args.rounds)
        label = f"`{name}`" + (f" OS{options['output_stride']}" if options else "")

        def result(key: str, run: dict | None = run) -> str:
            if run is None:
                return "cost only"
            value = run.get(key)
            return "not run" if value is None else f"{100 * value:.1f}" if key != "steps" else str(value)

        lines.append(f"| {label} | {parameters:.2f} M | {gflops:.1f} | {train_rate:.2f} | {predict_rate:.2f} | "
                     f"{result('steps')} | {result('best_val_miou')} | {result('test_miou')} | "
                     f"{result('test_thin_miou')} |")
        print(lines[-1], flush=True)
    (RESULTS / "backbones.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
