"""Real photographs (issue 21): seglab's shipped recipe (configs/labelmefacade.yaml) on the fixed LabelMeFacade
re-split (benchmarks/facade_split/: 545 train, 100 val, 300 test) under a wall-clock budget, scored once on the
test split at full resolution; or, with `--screen`, a lever's run: one change to the recipe, best val mIoU only,
the test split untouched (recipes are chosen on val). Rows go to results/real_data.jsonl, the tables to
results/real_data.md.

    python benchmarks/real_data.py --root DATA --minutes 50 --name facade50
    python benchmarks/real_data.py --root DATA --minutes 10 --name ohem --set loss=ohem_ce --screen
    python benchmarks/real_data.py --root DATA --minutes 0.2 --name smoke --screen --set limit_val_batches=2
    python benchmarks/real_data.py --report                      # results/real_data.jsonl -> results/real_data.md

The same budget against a plain smp loop, each on one core at the same time (the `smp peer` rows), was run by
this script at 26c2bc7 (`--arm peer`, and both arms pinned with `taskset` by default; INDEX.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness import Section, append_rows, machine, read_rows, write_report
from seglab.training import load_config, train

HERE = Path(__file__).resolve().parent
SPLIT = HERE / "facade_split"
CONFIG = HERE.parent / "configs" / "labelmefacade.yaml"
# The retired backbones study's budget runs share the log; their table is results/backbones.md.
BACKBONE_RUN_PREFIX = "backbone_"
THIN = ("door", "window", "car")


def facade_config(args: argparse.Namespace, overrides: list[str]):
    lists = ", ".join(f"{split}: {SPLIT / f'{split}.txt'}" for split in ("train", "val", "test"))
    return load_config(CONFIG, [f"data_root={args.root}", f"split_lists={{{lists}}}", f"max_minutes={args.minutes}",
                                "max_epochs=null", "runs_dir=runs/benchmarks/real_data", f"name={args.name}",
                                "progress_bar=false", *(["test_after_training=false"] if args.screen else []),
                                *overrides])


def run_seglab(args: argparse.Namespace) -> dict:
    shipped = facade_config(args, [])
    result = train(facade_config(args, args.set), overwrite=True)
    last = result.history[-1]
    record = {"arm": "seglab", "name": args.name, "overrides": args.set, "screen": args.screen,
              "baseline": (f"configs/labelmefacade.yaml as shipped: {shipped.model}, "
                           f"{'x'.join(map(str, shipped.data.crop_size))} crops, output stride "
                           f"{shipped.output_stride}, loss {shipped.loss}"),
              "steps": last["step"], "images_seen": last["images_seen"], "elapsed_s": round(last["elapsed_s"], 1),
              "best_val_miou": round(result.best_miou, 4) if result.best_miou is not None else None}
    if result.test is not None:
        scores = result.test.evaluation.scores
        per_class = dict(zip(result.module.class_names, map(float, scores["iou_per_class"]), strict=True))
        record |= {"test_miou": round(float(scores["miou"]), 4),
                   "test_pixel_accuracy": round(float(scores["pixel_accuracy"]), 4),
                   "test_thin_miou": round(sum(per_class[name] for name in THIN) / len(THIN), 4),
                   "test_iou_per_class": {name: round(value, 4) for name, value in per_class.items()}}
    return record


def report() -> None:
    rows = read_rows("real_data")
    finals = [row for row in rows if not row.get("screen") and "test_miou" in row
              and not row["name"].startswith(BACKBONE_RUN_PREFIX)]
    screens = [row for row in rows if row.get("screen")]
    intro = ("Written by `python benchmarks/real_data.py --report` from real_data.jsonl; the runs by the commands in "
             "benchmarks/real_data.py's docstring. Data: 545 train / 100 val / 300 test (benchmarks/facade_split, "
             "seed 21). The `smp peer` rows ran beside seglab's, one core each (`taskset`, one thread): INDEX.md.")
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
    write_report("real_data", "Real photographs: seglab's shipped recipe on the LabelMeFacade re-split", intro,
                 sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="the LabelMeFacade folder (images/, labels/)")
    parser.add_argument("--minutes", type=float, default=50.0, help="training budget")
    parser.add_argument("--name", default="facade", help="run name (runs/benchmarks/real_data/<name>)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    parser.add_argument("--screen", action="store_true", help="validation only (a lever's run)")
    parser.add_argument("--report", action="store_true", help="write results/real_data.md and stop")
    args = parser.parse_args()
    if args.report:
        report()
        return
    if args.root is None:
        parser.error("--root is required")
    record = {**run_seglab(args), "minutes": args.minutes, **machine()}
    append_rows("real_data", [record])
    print(json.dumps(record))
    report()


if __name__ == "__main__":
    main()
