"""seglab's speed against segmentation_models_pytorch (smp) on this CPU, with the machine's ceiling.

DeepLabV3+ on Xception-65 at output stride 16 (the same architecture in both; smp through timm's
`tu-xception65`), 21 classes, random weights, 2 threads, images/s: medians of interleaved rounds after warm-up.

- ceiling: the best GFLOP/s of large convolutions in fp32 and bf16; every figure is also given as a share of it
  (FLOPs per image x images/s; training counted as 3x the forward FLOPs);
- inference at 224x224, batch 1 and 8: smp's bare forward pass in fp32, bf16 and bf16 + channels_last, against
  seglab's `Predictor` as `seglab.load` builds it with precision auto, in fp32, and on ONNX Runtime
  (`export_onnx`). (`compile=True` was measured at 1c0a9cc: off by default, see speed.md of that commit);
- training at 224x224 and 240x320, batch 8: smp's bare training step (cross-entropy, fused AdamW) in the three
  forms, against `seglab.training.train` with its default settings on a folder of images of that size
  (Lightning, data loading and augmentation included), over its steps after the first two; and the peak RSS
  of each training process.

Run in the peers' environment (`bash benchmarks/peers.sh`; smp's torchvision stub: harness.STUB_NOTE):
    .venv-peers/bin/python benchmarks/speed.py              # ~20 min; results/speed.{jsonl,md}
    .venv-peers/bin/python benchmarks/speed.py --only --rounds 1 --sizes 64       # the ceiling alone
    python benchmarks/speed.py --report                     # rewrites speed.md from the latest run's rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from harness import (
    CLASSES,
    SMP_FORMS,
    STUB_NOTE,
    Section,
    append_rows,
    forward_runner,
    interleaved_seconds,
    latest_run,
    peer_step_runner,
    run_stamp,
    scores_runners,
    seglab_model,
    seglab_predictors,
    smp_forward_runners,
    smp_label,
    smp_model,
    write_report,
    written_by,
)


def forward_flops(model: torch.nn.Module, size: tuple[int, int]) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.rand(1, 3, *size))
    return float(counter.get_total_flops())


def conv_ceiling(rounds: int) -> dict[str, float]:
    """GFLOP/s of large convolutions (3x3 and 1x1, 256-1024 channels, batch 8), the best shape and memory format
    per dtype: what this CPU's convolution kernels reach at best."""
    best: dict[str, float] = {}
    for channels, kernel, side in ((256, 3, 56), (512, 3, 28), (1024, 1, 28)):
        images = torch.rand(8, channels, side, side)
        conv = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
        flops = 2 * 8 * channels * channels * kernel * kernel * side * side
        runners = {(p, cl): forward_runner(conv, images, p, cl) for p, cl in (*SMP_FORMS, ("fp32", True))}
        for (precision, _), seconds in interleaved_seconds(runners, rounds, warmup=2).items():
            best[precision] = max(best.get(precision, 0.0), flops / seconds / 1e9)
    return best


def inference(rounds: int, workdir: Path, side: int) -> dict[str, dict[str, float]]:
    _, predictors = seglab_predictors(workdir)
    smp = smp_model()
    results = {}
    for batch in (1, 8):
        images = torch.rand(batch, 3, side, side)
        runners = smp_forward_runners(smp, images) | scores_runners(predictors, images)
        seconds = interleaved_seconds(runners, rounds, warmup=2)
        results[f"inference {side}x{side}, batch {batch}"] = {name: batch / value for name, value in seconds.items()}
    return results


def write_folder(root: Path, size: tuple[int, int], count: int) -> None:
    """`count` random image/mask pairs of `size` in seglab's split-folder layout (train and val)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 4)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for index in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{index:03d}.png")
            Image.fromarray(rng.integers(0, 4, size, dtype=np.uint8)).save(root / split / "masks" / f"{index:03d}.png")


# Each training process alone, so that its peak RSS is its own.
TRAIN_RUN = """
import json, sys, time, types
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
sys.path.insert(0, sys.argv[2])
import lightning.pytorch as pl
from harness import peak_rss_gb
from seglab.training import make_config, train

class StepClock(pl.Callback):
    def __init__(self):
        self.marks = []
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.marks.append((time.perf_counter(), len(batch[0])))

clock = StepClock()
result = train(make_config(json.loads(sys.argv[1])), overwrite=True, extra_callbacks=[clock])
(start, _), rest = clock.marks[1], clock.marks[2:]
print(json.dumps({"images_per_second": sum(n for _, n in rest) / (rest[-1][0] - start),
                  "chose": f"{result.trainer.precision}, channels_last={result.module.config.channels_last}",
                  "peak_rss_gb": peak_rss_gb()}))
"""

PEER_RUN = """
import json, sys, torch
sys.path.insert(0, sys.argv[2])
from harness import peak_rss_gb, peer_step_runner, smp_model
side = int(sys.argv[1])
run = peer_step_runner(smp_model(), torch.rand(8, 3, side, side), torch.randint(0, 21, (8, side, side)), "bf16", True)
for _ in range(4):
    run()
print(json.dumps({"peak_rss_gb": peak_rss_gb()}))
"""


def run_json(arguments: list[str]) -> dict:
    completed = subprocess.run([sys.executable, "-c", *arguments, str(Path(__file__).parent)], capture_output=True,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "2"}, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"a training process failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def training(rounds: int, workdir: Path, steps: int, sizes: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    results = {}
    for size in sizes:
        images, masks = torch.rand(8, 3, *size), torch.randint(0, CLASSES, (8, *size))
        runners = {smp_label(p, cl): peer_step_runner(smp_model(), images, masks, p, cl) for p, cl in SMP_FORMS}
        figures = {name: 8 / value for name, value in interleaved_seconds(runners, rounds).items()}
        del runners
        data = workdir / f"data_{size[0]}x{size[1]}"
        write_folder(data, size, 8 * (steps + 1))
        config = {"name": "speed", "runs_dir": str(workdir / "runs"), "dataset": "folder", "data_root": str(data),
                  "num_classes": 4, "model": "deeplabv3plus_xception65", "output_stride": 16, "batch_size": 8,
                  "image_size": list(size), "max_steps": steps, "val_every_n_epochs": 1000, "progress_bar": False,
                  "logger": "csv", "test_after_training": False}
        run = run_json([TRAIN_RUN, json.dumps(config)])
        figures[f"seglab train (default: {run['chose']})"] = run["images_per_second"]
        peer = run_json([PEER_RUN, str(size[0])])
        figures |= {"peak RSS GB, seglab train": run["peak_rss_gb"], "peak RSS GB, smp bf16+CL": peer["peak_rss_gb"]}
        results[f"training {size[0]}x{size[1]}, batch 8"] = figures
    return results


def rows_of(section: str, figures: dict[str, float], flops: float | None, ceiling: dict[str, float]) -> list[dict]:
    """One row per contender: images/s, against smp at its best in the same table, and as a share of the ceiling
    (the bf16 ceiling for contenders that run bf16)."""
    best = max(value for name, value in figures.items() if name.startswith("smp"))
    rows = []
    for name, value in figures.items():
        if name.startswith("peak RSS"):
            rows.append({"section": section, "contender": name, "img/s": None, "GB": value})
            continue
        bf16 = "fp32" not in name and "onnxruntime" not in name
        rate = (ceiling.get("bf16" if bf16 else "fp32") or 0) * 1e9
        rows.append({"section": section, "contender": name, "img/s": value, "vs smp best": f"{value / best:.2f}x",
                     "ceiling %": flops * value / rate if flops and rate else None})
    return rows


def report() -> None:
    latest = latest_run("speed")
    intro = (written_by(".venv-peers/bin/python benchmarks/speed.py", latest[0]) + " DeepLabV3+ Xception-65, "
             f"output stride 16, 21 classes, random weights. Images/s, medians of "
             f"interleaved rounds after warm-up; `vs smp best` against smp's fastest form in the same table. "
             f"Note: {STUB_NOTE}. Earlier runs: speed.jsonl; the GPU table: gpu_speed.json (INDEX.md).")
    sections = dict.fromkeys(row["section"] for row in latest)
    write_report("speed", "Speed: seglab against smp", intro, [
        Section(name, rows=[row for row in latest if row["section"] == name],
                columns=[key for key in ("contender", "img/s", "vs smp best", "ceiling %", "GB", "GFLOP/s")
                         if any(key in row for row in latest if row["section"] == name)])
        for name in sections])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=12, help="steps of each `seglab train` run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 240], help="inference side; training "
                        "sides (240 means 240x320)")
    parser.add_argument("--only", nargs="*", default=["inference", "training"], choices=("inference", "training"),
                        help="the ceiling is always measured: every share is taken against it")
    parser.add_argument("--report", action="store_true", help="only rewrite speed.md from speed.jsonl")
    args = parser.parse_args()
    if args.report:
        report()
        return
    torch.set_num_threads(2)
    stamp = run_stamp()
    ceiling = conv_ceiling(args.rounds)
    append_rows("speed", [{**stamp, "section": "ceiling: best large convolution", "contender": precision,
                           "GFLOP/s": value} for precision, value in ceiling.items()])
    side = args.sizes[0]
    with tempfile.TemporaryDirectory() as scratch:
        if "inference" in args.only:
            flops = forward_flops(seglab_model(), (side, side))
            for section, figures in inference(args.rounds, Path(scratch), side).items():
                append_rows("speed", [{**stamp, **row} for row in rows_of(section, figures, flops, ceiling)])
        if "training" in args.only:
            sizes = [(s, s) if s != 240 else (240, 320) for s in args.sizes]
            for (section, figures), size in zip(training(args.rounds, Path(scratch), args.train_steps, sizes).items(),
                                                sizes, strict=True):
                flops = 3 * forward_flops(seglab_model(), size)
                append_rows("speed", [{**stamp, **row} for row in rows_of(section, figures, flops, ceiling)])
    report()


if __name__ == "__main__":
    main()
