"""seglab against smp on one GPU: DeepLabV3+ Xception-65, output stride 16, batch 16 at 512x512, bf16 autocast +
channels_last, eager and torch.compile, inference and training (seglab's `training_step`: forward + cross-entropy +
backward + AdamW).

Both models run the same bare loop, so the ratio is model against model. Rounds are interleaved across
contenders and timed with CUDA events; figures are medians of images/s after warm-up. The GPU machine has no
network: smp, kornia and kornia_rs travel as wheels (see the README's speed section).

    python benchmarks/gpu_speed.py --out results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch

from seglab.inference.fold import fold_batch_norms
from seglab.models import build_model
from seglab.training.losses import build_loss
from seglab.training.step import training_step

BATCH, SIZE, CLASSES = 16, 512, 21


def smp_model() -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(encoder_name="tu-xception65", encoder_weights=None, classes=CLASSES)


def seglab_model() -> torch.nn.Module:
    return build_model("deeplabv3plus_xception65", num_classes=CLASSES, output_stride=16)


def inference_runner(model: torch.nn.Module, images: torch.Tensor) -> Callable[[], None]:
    model.eval()

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(images)

    return run


def training_runner(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> Callable[[], None]:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss = build_loss("ce")

    def run() -> None:
        training_step(model, images, masks, loss, optimizer, precision="bf16")

    return run


def images_per_second(runners: dict[str, Callable[[], None]], rounds: int, steps: int) -> dict[str, float]:
    for run in runners.values():  # warm-up (and, for compiled ones, compilation)
        for _ in range(3):
            run()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                run()
            end.record()
            torch.cuda.synchronize()
            times[name].append(start.elapsed_time(end) / 1000 / steps)
    return {name: BATCH / statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    images = torch.rand(BATCH, 3, SIZE, SIZE, device=device).contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, CLASSES, (BATCH, SIZE, SIZE), device=device)
    builders = {"smp": smp_model, "seglab": seglab_model}
    models = {name: build().to(device).to(memory_format=torch.channels_last) for name, build in builders.items()}
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": BATCH,
                    "size": SIZE, "precision": "bf16 autocast + channels_last", "results": {}}

    def record(task: str, figures: dict[str, float], started: float) -> None:
        report["results"][task] = figures
        report[f"{task}_seconds"] = round(time.perf_counter() - started, 1)
        print(task, json.dumps({k: round(v, 1) for k, v in figures.items()}), flush=True)
        with open(args.out, "w") as file:
            json.dump(report, file, indent=2)

    started = time.perf_counter()
    # BatchNorm folded into the convolutions, channels_last: how seglab's Predictor ran it on GPUs until this
    # run measured it slower there (`batch_norm_folding_is_faster`).
    predictor_network = fold_batch_norms(copy.deepcopy(models["seglab"]).eval()).to(memory_format=torch.channels_last)
    record("inference_eager", images_per_second(
        {**{name: inference_runner(model, images) for name, model in models.items()},
         "seglab, BatchNorm folded": inference_runner(predictor_network, images)}, args.rounds, args.steps), started)
    started = time.perf_counter()
    record("training_eager", images_per_second(
        {name: training_runner(model, images, masks) for name, model in models.items()}, args.rounds, args.steps),
        started)
    if args.no_compile:
        return
    compiled = {name: torch.compile(model) for name, model in models.items()}
    started = time.perf_counter()
    record("inference_compiled", images_per_second(
        {name: inference_runner(model, images) for name, model in compiled.items()}, args.rounds, args.steps), started)
    started = time.perf_counter()
    record("training_compiled", images_per_second(
        {name: training_runner(model, images, masks) for name, model in compiled.items()}, args.rounds, args.steps),
        started)


if __name__ == "__main__":
    main()
