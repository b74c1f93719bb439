"""Data pipeline speed against training speed: can the loaders feed DeepLabV3+ (Xception-65) on this machine?

Pipeline images/s = decode (or generate) + resize in the DataLoader (batch 8, shuffled, collated), plus the batch
augmentation (`SegmentationAugmentation()` defaults) in the main process, where training runs it. Measured with
the training config's default `num_workers` (0) and with `seglab.data.default_num_workers()`.
Training images/s = seglab's training step (`seglab.training.training_step`: forward + cross-entropy + backward
+ AdamW, fp32) of `deeplabv3plus_xception65` on random batches of the same size. The target is a pipeline at
least 3x faster than training.

    .venv/bin/python benchmarks/data_pipeline.py            # writes benchmarks/results/data_pipeline.md
    .venv/bin/python benchmarks/data_pipeline.py --quick    # a smoke run, prints only
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from common import RESULTS
from seglab.data import FolderDataset, FolderOptions, ShapesDataset, default_num_workers
from seglab.data.transforms import SegmentationAugmentation
from seglab.models import build_model
from seglab.training import training_step
from seglab.training.losses import build_loss

REPORT = RESULTS / "data_pipeline.md"


def make_folder_data(root: Path, count: int) -> tuple[Path, Path]:
    # Pet-like files: 500x375 JPEG photos (noise + smooth structure, so they do not compress to nothing)
    # with 3-class PNG masks, decoded and resized to 224 by the dataset.
    rng = np.random.default_rng(0)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    ys, xs = np.mgrid[0:375, 0:500]
    for i in range(count):
        smooth = (np.sin(xs / (20 + i)) + np.cos(ys / (15 + i)))[..., None] * 60 + 128
        rgb = np.clip(smooth + rng.normal(0, 25, (375, 500, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(images / f"pet_{i}.jpg", quality=90)
        r = ((ys - 187) / 120.0) ** 2 + ((xs - 250) / 160.0) ** 2
        mask = np.where(r <= 1.0, 0, np.where(r <= 1.2, 2, 1)).astype(np.uint8)
        Image.fromarray(mask).save(masks / f"pet_{i}.png")
    return images, masks


def pipeline_rate(dataset, *, workers: int, batches: int, batch_size: int = 8) -> float:
    # Median over batches of (wait for the next collated batch + augment it): robust to the bursts of other
    # processes on a shared machine. The first batch pays for worker start-up and is not counted.
    options = {"num_workers": workers, "persistent_workers": workers > 0}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, **options)
    augment = SegmentationAugmentation(seed=0)
    timings: list[float] = []
    while len(timings) < batches + 1:
        start = time.perf_counter()
        for images, masks in loader:
            augment(images, masks)
            now = time.perf_counter()
            timings.append(now - start)
            start = now
            if len(timings) == batches + 1:
                break
    return batch_size / float(np.median(timings[1:]))


def component_times(dataset, *, samples: int = 40, batch_size: int = 8) -> tuple[float, float]:
    # Median ms of one dataset item (decode/generate + resize) and of augmenting one batch, in this process.
    item_times = []
    for index in range(samples):
        start = time.perf_counter()
        dataset[index % len(dataset)]
        item_times.append(time.perf_counter() - start)
    images, masks = (torch.stack(parts) for parts in zip(*(dataset[i] for i in range(batch_size)), strict=True))
    augment = SegmentationAugmentation(seed=0)
    augment_times = []
    for _ in range(10):
        start = time.perf_counter()
        augment(images, masks)
        augment_times.append(time.perf_counter() - start)
    return 1000 * float(np.median(item_times)), 1000 * float(np.median(augment_times))


def training_rate(size: int, *, steps: int, batch_size: int) -> float:
    model = build_model("deeplabv3plus_xception65", num_classes=4)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss = build_loss("ce")
    images = torch.rand(batch_size, 3, size, size)
    masks = torch.randint(0, 4, (batch_size, size, size))
    timings = []
    for _ in range(steps + 1):  # the first step allocates and is not counted
        start = time.perf_counter()
        training_step(model, images, masks, loss, optimizer, precision="fp32")
        timings.append(time.perf_counter() - start)
    return batch_size / float(np.median(timings[1:]))


def other_busy_processes() -> list[str]:
    # Processes other than this one using more than 20% of a core right now, from one `top` snapshot.
    try:
        lines = subprocess.run(["top", "-bn1"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []
    busy = []
    for line in lines[7:]:
        fields = line.split()
        try:
            if len(fields) >= 12 and int(fields[0]) != os.getpid() and float(fields[8]) > 20.0:
                busy.append(f"{fields[11]} {fields[8]}% CPU")
        except ValueError:
            continue
    return busy


def machine_state() -> tuple[str, bool]:
    busy = other_busy_processes()
    load = os.getloadavg()[0]
    text = f"load average {load:.2f}, other busy processes: {', '.join(busy) or 'none'}"
    # The load average also counts this benchmark's own recent work, so only other busy processes say "shared".
    return text, bool(busy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few batches, no results file")
    parser.add_argument("--train-batch", type=int, default=4, help="batch size of the training-step measurement")
    args = parser.parse_args()
    batches, steps = (3, 1) if args.quick else (25, 3)
    state_before, shared_before = machine_state()
    worker_counts = sorted({0, default_num_workers()})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images_dir, masks_dir = make_folder_data(Path(tmp), 64)
        cases = [
            ("shapes v1", 128, ShapesDataset("train", size=128)),
            ("folder (500x375 JPEG -> 224)", 224,
             FolderDataset(images_dir, masks_dir, FolderOptions(num_classes=3), size=224)),
        ]
        for name, size, dataset in cases:
            parts = component_times(dataset)
            pipes = {w: pipeline_rate(dataset, workers=w, batches=batches) for w in worker_counts}
            train = training_rate(size, steps=steps, batch_size=args.train_batch)
            rows.append((name, size, parts, pipes, train))
            print(name, size, {w: round(r, 1) for w, r in pipes.items()}, "train", round(train, 2), flush=True)
    state_after, shared_after = machine_state()
    if args.quick:
        return
    lines = [
        "# Data pipeline vs training speed",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `benchmarks/data_pipeline.py`: "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU, torch "
        f"{torch.__version__}, {torch.get_num_threads()} torch threads.",
        f"Machine state: before the run, {state_before}; after it, {state_after}.",
        "",
        "| data | size | item ms | augment ms / batch of 8 | "
        + " | ".join(f"pipeline img/s, {w} workers" for w in worker_counts)
        + f" | training step img/s (DeepLabV3+ Xception-65, batch {args.train_batch}) | pipeline / training |",
        "|---|---|---|---|" + "---|" * len(worker_counts) + "---|---|",
    ]
    for name, size, (item_ms, augment_ms), pipes, train in rows:
        cells = " | ".join(f"{pipes[w]:.1f}" for w in worker_counts)
        ratios = " / ".join(f"{pipes[w] / train:.0f}x" for w in worker_counts)
        lines.append(f"| {name} | {size} | {item_ms:.1f} | {augment_ms:.0f} | {cells} | {train:.2f} | {ratios} |")
    lines += [
        "",
        "Pipeline: DataLoader (batch 8, shuffled, default collate) + `SegmentationAugmentation()` on each batch in",
        f"the main process, median time per batch over {batches} batches. Training: forward + backward + AdamW",
        f"step on random batches, median of {steps} steps after one warm-up. Workers: 0 is the training config's",
        "default, the other count is `seglab.data.default_num_workers()` (cores - 1). Item ms: median time of",
        "one `dataset[i]` (generate, or decode + resize to the size) in the main process; augment ms: median time",
        "of `SegmentationAugmentation()` on one batch of 8 (all four augmentations on, hue off).",
    ]
    if shared_before or shared_after:
        lines += [
            "",
            f"**Other processes were sharing the {os.cpu_count()} cores during this run** (other engineers' tests",
            "and training on the same machine), so every number above is lower than on an idle machine.",
        ]
    REPORT.write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
