"""Learning per optimizer step on shapes v1: a diagnostic beside the time-to-accuracy benchmark.

The time-to-accuracy runs are limited by optimizer steps, not by images/s, so this script takes the engine's
schedule, augmentation and callbacks out of the picture: a plain loop of seglab's `training_step` (fresh procedural
samples in a fixed order, AdamW at a constant LR, cross-entropy, no augmentation, one torch thread so two variants
can run side by side on the 2 cores) that reports val mIoU every 100 steps, predicted through
`seglab.inference.Predictor`.
`--model reference_cnn` is an 8-layer plain CNN (no residuals, stride 2, dilated): it tells how hard the data
is, independently of DeepLabV3+.

    python benchmarks/steps_to_learn.py --model deeplabv3plus_xception41 --precision bf16 --lr 1e-3 --steps 600
    python benchmarks/steps_to_learn.py --model reference_cnn --precision fp32 --lr 1e-3 --steps 400
    python benchmarks/steps_to_learn.py --zero-init-residual --lr 5e-3 --steps 400

Rows are appended to benchmarks/results/steps_to_learn.csv.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from common import RESULTS, append_rows
from seglab.data import ShapesDataset
from seglab.evaluation.loop import evaluate
from seglab.inference import InferenceSpec, Predictor
from seglab.models import build_model
from seglab.training import training_step
from seglab.training.losses import build_loss

COLUMNS = ("model", "precision", "lr", "image_size", "batch_size", "init", "step", "train_loss", "val_miou", "seconds")


def reference_cnn(num_classes: int) -> nn.Module:
    def conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )

    return nn.Sequential(
        conv(3, 32),
        conv(32, 32),
        conv(32, 64, stride=2),
        conv(64, 64),
        conv(64, 64, dilation=2),
        conv(64, 64, dilation=4),
        nn.Upsample(scale_factor=2, mode="bilinear"),
        conv(64, 32),
        nn.Conv2d(32, num_classes, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="deeplabv3plus_xception41", help="a registered model or reference_cnn")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--zero-init-residual", action="store_true", help="start residual blocks as shortcuts")
    parser.add_argument("--kaiming-fan-out", action="store_true",
                        help="re-initialise convolutions as timm/DeepLab do (He normal, fan-out)")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    train = ShapesDataset("train", size=args.image_size, length=100_000)
    val = ShapesDataset("val", size=args.image_size)
    # Images in [0, 1] as they come (no normalisation), at their own size: what the loop trains on.
    spec = InferenceSpec(model=args.model, model_options={}, num_classes=train.num_classes,
                         class_names=tuple(train.class_names), palette=tuple(train.palette))
    if args.model == "reference_cnn":
        model = reference_cnn(train.num_classes)
    else:
        options = {"zero_init_residual": True} if args.zero_init_residual else {}
        model = build_model(args.model, num_classes=train.num_classes, **options)
        if args.kaiming_fan_out:
            for conv in model.modules():
                if isinstance(conv, nn.Conv2d):
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loss = build_loss("ce")
    init = "+".join(name for name, chosen in (("zero_init_residual", args.zero_init_residual),
                                              ("kaiming_fan_out", args.kaiming_fan_out)) if chosen) or "default"

    rows, losses, start = [], [], time.perf_counter()
    for step in range(1, args.steps + 1):
        first = (step - 1) * args.batch_size
        batch = [train[first + i] for i in range(args.batch_size)]
        images, masks = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        losses.append(training_step(model, images, masks, loss, optimizer, precision=args.precision).item())
        if step % 100 == 0:
            # The Predictor predicts with an eval-mode copy in fp32; the model trains on untouched.
            predictor = Predictor(model, spec, device="cpu", precision="fp32", batch_size=len(val))
            miou = float(evaluate(predictor, val).scores["miou"])
            row = {
                "model": args.model,
                "precision": args.precision,
                "lr": args.lr,
                "image_size": args.image_size,
                "batch_size": args.batch_size,
                "init": init,
                "step": step,
                "train_loss": round(sum(losses[-100:]) / 100, 4),
                "val_miou": round(miou, 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            print(row, flush=True)

    append_rows(RESULTS / "steps_to_learn.csv", rows, COLUMNS)


if __name__ == "__main__":
    main()
