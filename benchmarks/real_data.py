"""Real photographs side by side (issue 21): seglab's shipped recipe (configs/labelmefacade.yaml) against a plain
smp loop, on the fixed LabelMeFacade re-split (benchmarks/facade_split/: 545 train, 100 val, 300 test), the same
wall-clock training budget each, one CPU core each, run at the same time (`taskset`), both scored once on the
test split at full resolution with seglab's scoring (`seglab.evaluation.scores`).

The peer loop is what a practitioner writes from smp's examples: DeepLabV3Plus(tu-xception65) from scratch,
cross-entropy, AdamW 1e-3 with a one-cycle schedule (following the clock, as seglab's does under max_minutes),
horizontal flips and scale jitter (0.5-2.0), 240x320 crops, bf16 autocast + channels-last, batch 8, and its last
weights scored (it has no validation split to choose by).

    bash benchmarks/peers.sh                                     # .venv-peers: seglab + smp
    python benchmarks/real_data.py --root DATA --minutes 50      # both arms; appends to results/real_data.jsonl
    python benchmarks/real_data.py --root DATA --arm seglab --minutes 0.2 --name smoke --screen   # a smoke run
    python benchmarks/real_data.py --root DATA --arm seglab --minutes 12 --name ohem --set loss=ohem_ce --screen
    python benchmarks/real_data.py --report                      # results/real_data.jsonl -> results/real_data.md

`--screen` is a lever's validation run: best val mIoU only, the test split untouched (recipes are chosen on val).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from harness import PEER_PYTHON, Section, append_rows, import_smp, machine, read_rows, write_report
from seglab.data import build_datasets
from seglab.evaluation import confusion_from_labels, scores_from_confusion
from seglab.training import load_config, train

HERE = Path(__file__).resolve().parent
SPLIT = HERE / "facade_split"
CONFIG = HERE.parent / "configs" / "labelmefacade.yaml"
# The retired backbones study's budget runs share the log; their table is results/backbones.md.
BACKBONE_RUN_PREFIX = "backbone_"
THIN = ("door", "window", "car")


def facade_config(root: str, minutes: float, name: str, overrides: list[str], screen: bool):
    lists = ", ".join(f"{split}: {SPLIT / f'{split}.txt'}" for split in ("train", "val", "test"))
    return load_config(CONFIG, [f"data_root={root}", f"split_lists={{{lists}}}", f"max_minutes={minutes}",
                                "max_epochs=null", "runs_dir=runs/benchmarks/real_data", f"name={name}",
                                "progress_bar=false", *(["test_after_training=false"] if screen else []),
                                *overrides])


def run_seglab(args: argparse.Namespace) -> dict:
    config = facade_config(args.root, args.minutes, args.name, args.set, args.screen)
    shipped = facade_config(args.root, args.minutes, args.name, [], args.screen)
    result = train(config, overwrite=True)
    last = result.history[-1]
    record = {"arm": "seglab", "name": args.name, "overrides": args.set, "screen": args.screen,
              "baseline": (f"configs/labelmefacade.yaml as shipped: {shipped.model}, "
                           f"{'x'.join(map(str, shipped.data.crop_size))} crops, output stride "
                           f"{shipped.output_stride}, loss {shipped.loss}"),
              "steps": last["step"], "images_seen": last["images_seen"], "elapsed_s": round(last["elapsed_s"], 1),
              "best_val_miou": round(result.best_miou, 4) if result.best_miou is not None else None}
    if result.test is not None:
        scores = result.test.evaluation.scores
        record |= test_record(scores, list(result.module.class_names))
    return record


def test_record(scores: dict, class_names: list[str]) -> dict:
    iou = [float(value) for value in scores["iou_per_class"]]
    per_class = dict(zip(class_names, iou, strict=True))
    return {"test_miou": round(float(scores["miou"]), 4),
            "test_pixel_accuracy": round(float(scores["pixel_accuracy"]), 4),
            "test_thin_miou": round(sum(per_class[name] for name in THIN) / len(THIN), 4),
            "test_iou_per_class": {name: round(value, 4) for name, value in per_class.items()}}


def one_cycle_lr(progress: float, peak: float, pct_start: float = 0.3) -> float:
    """torch's OneCycleLR (cosine up from peak/25, then cosine down to peak/25e4) at `progress`, the share of the
    time budget spent."""
    def cosine(start: float, end: float, share: float) -> float:
        return end + (start - end) / 2 * (1 + math.cos(math.pi * min(1.0, share)))

    initial = peak / 25
    if progress < pct_start:
        return cosine(initial, peak, progress / pct_start)
    return cosine(peak, initial / 1e4, (progress - pct_start) / (1 - pct_start))


def peer_batch(dataset, generator: torch.Generator, size=(240, 320), batch=8, ignore=255):
    """8 random images, each scaled by 0.5-2.0, flipped half the time, cropped (padded where smaller) to `size`."""
    import torch.nn.functional as F

    images, masks = [], []
    for index in torch.randint(len(dataset), (batch,), generator=generator).tolist():
        image, mask = dataset[index]
        scale = 0.5 + 1.5 * torch.rand((), generator=generator).item()
        height, width = (max(1, round(side * scale)) for side in image.shape[-2:])
        image = F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest")[0, 0].long()
        if torch.rand((), generator=generator).item() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        pad_h, pad_w = max(0, size[0] - height), max(0, size[1] - width)
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=ignore)
        top = torch.randint(image.shape[-2] - size[0] + 1, (), generator=generator).item()
        left = torch.randint(image.shape[-1] - size[1] + 1, (), generator=generator).item()
        images.append(image[:, top:top + size[0], left:left + size[1]])
        masks.append(mask[top:top + size[0], left:left + size[1]])
    return torch.stack(images), torch.stack(masks)


def run_peer(args: argparse.Namespace) -> dict:
    import torch.nn.functional as F

    smp = import_smp()
    config = facade_config(args.root, args.minutes, args.name, [], screen=False)
    data = build_datasets(dataclasses.replace(config.data, crop_size=None), seed=config.seed, echo=lambda _: None)
    torch.manual_seed(0)
    num_classes = len(config.data.folder.class_names)
    model = smp.DeepLabV3Plus(encoder_name="tu-xception65", encoder_weights=None, classes=num_classes)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # ImageNet statistics, as smp's preprocessing for its encoders.
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    generator = torch.Generator().manual_seed(0)
    budget, start, steps = args.minutes * 60, time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < budget:
        for group in optimizer.param_groups:
            group["lr"] = one_cycle_lr(elapsed / budget, 1e-3)
        images, masks = peer_batch(data["train"], generator)
        images = ((images - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images).float(), masks, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    trained_s = time.monotonic() - start
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for index in range(len(data["test"])):
            image, mask = data["test"][index]
            height, width = image.shape[-2:]
            padded = F.pad((image - mean) / std, (0, -width % 16, 0, -height % 16))
            logits = model(padded[None].contiguous(memory_format=torch.channels_last))[0, :, :height, :width]
            confusion += torch.as_tensor(confusion_from_labels(logits.argmax(0).numpy(), mask.numpy(), num_classes,
                                                               ignore_index=255))
    return {"arm": "smp peer", "name": args.name, "steps": steps, "images_seen": steps * 8,
            "elapsed_s": round(trained_s, 1)} | test_record(scores_from_confusion(confusion),
                                                            list(config.data.folder.class_names))


def run_both(args: argparse.Namespace) -> None:
    """Both arms at once, each pinned to its own core with one thread."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    common = [__file__, "--root", args.root, "--minutes", str(args.minutes)]
    arms = [(["taskset", "-c", "0", sys.executable, *common, "--arm", "seglab", "--name", args.name]),
            (["taskset", "-c", "1", str(PEER_PYTHON), *common, "--arm", "peer", "--name", f"{args.name}_peer"])]
    processes = [subprocess.Popen(command, env=environment) for command in arms]
    if any(process.wait() for process in processes):
        sys.exit("an arm failed (above)")


def report() -> None:
    rows = read_rows("real_data")
    finals = [row for row in rows if not row.get("screen") and "test_miou" in row
              and not row["name"].startswith(BACKBONE_RUN_PREFIX)]
    screens = [row for row in rows if row.get("screen")]
    intro = ("Written by `python benchmarks/real_data.py --report` from real_data.jsonl; the runs by the commands in "
             "benchmarks/real_data.py's docstring. Data: 545 train / 100 val / 300 test (benchmarks/facade_split, "
             "seed 21). Each arm on one core (`taskset`, one thread) of the machine named in the row.")
    sections = [Section("Test split, scored once at full resolution", rows=[
        {"run": row["name"], "arm": row["arm"], "CPU": row.get("cpu"), "minutes": row.get("minutes"),
         "steps": row["steps"], "images": row["images_seen"], "test mIoU %": row["test_miou"],
         "thin (door, window, car) mIoU %": row["test_thin_miou"],
         **{f"{name} %": value for name, value in row["test_iou_per_class"].items()}} for row in finals])]
    baselines = dict.fromkeys(row.get("baseline", "configs/labelmefacade.yaml as shipped") for row in screens)
    for number, baseline in enumerate(baselines, 1):
        sections.append(Section(
            f"Levers, round {number} (validation split, test untouched): changes from {baseline}",
            "Each lever is one change from the baseline; two runs at a time, one core each. The budget counts "
            "validation too, so `steps` says what each lever bought in optimiser steps.",
            [{"lever run": row["name"] + (f" ({row['note']})" if row.get("note") else ""),
              "changed": ", ".join(row["overrides"]) or "nothing (the baseline)", "CPU": row.get("cpu"),
              "minutes": row.get("minutes"), "steps": row["steps"], "best val mIoU %": row["best_val_miou"]}
             for row in screens if row.get("baseline", "configs/labelmefacade.yaml as shipped") == baseline]))
    write_report("real_data", "Real photographs: LabelMeFacade re-split, seglab's shipped recipe against a plain "
                 "smp loop", intro, sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="the LabelMeFacade folder (images/, labels/)")
    parser.add_argument("--minutes", type=float, default=50.0, help="training budget per arm")
    parser.add_argument("--arm", choices=["seglab", "peer"], help="run one arm here (default: both, pinned)")
    parser.add_argument("--name", default="facade", help="run name (runs/benchmarks/real_data/<name>)")
    parser.add_argument("--set", nargs="*", default=[], help="seglab arm: config overrides key=value")
    parser.add_argument("--screen", action="store_true", help="seglab arm: validation only (a lever's run)")
    parser.add_argument("--report", action="store_true", help="write results/real_data.md and stop")
    args = parser.parse_args()
    if args.report:
        report()
        return
    if args.root is None:
        parser.error("--root is required")
    if args.arm is None:
        run_both(args)
        report()
        return
    record = run_seglab(args) if args.arm == "seglab" else run_peer(args)
    record |= {"minutes": args.minutes, **machine()}
    append_rows("real_data", [record])
    print(json.dumps(record))


if __name__ == "__main__":
    main()
