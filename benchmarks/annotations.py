"""Training from a COCO export as it comes vs from the same images with PNG masks: steps per second of the
second epoch (the export's masks are then read from the cache, as in every epoch after the first), and the
rasterisation that fills the cache before training, timed on its own (`seglab data check` on a fresh cache).

    python benchmarks/annotations.py [--source ../shared/data/facade_coco] [--images 500]
    BENCHMARK_RESULTS=/tmp/smoke python benchmarks/annotations.py --images 8 --steps 2    # a smoke run

The subset: the first `--images` images of the export's train and valid splits as one train split (links to the
images), 16 valid images as val. The PNG copy is made by `seglab data convert`. Both runs train the same small
model with the same settings. Writes results/annotations.{jsonl,md} (one row per run, the machine in each)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Section, append_rows, machine, write_report, written_by
from seglab.training import make_config, train

REPO = Path(__file__).resolve().parents[1]


def subset_export(source: Path, out: Path, count: int, val_count: int = 16) -> Path:
    """A Roboflow-layout COCO export of `count` training and `val_count` valid images of `source` (links)."""
    images, categories = [], None
    for split in ("train", "valid", "test"):
        data = json.loads((source / split / "_annotations.coco.json").read_text())
        categories = data["categories"]
        by_image: dict = {}
        for annotation in data["annotations"]:
            by_image.setdefault(annotation["image_id"], []).append(annotation)
        for image in data["images"]:
            found = next(p for p in (source / split / image["file_name"], source / split / "images" /
                                     image["file_name"]) if p.is_file())
            images.append((found, image, by_image.get(image["id"], [])))
    parts = {"train": images[:count], "valid": images[count:count + val_count]}
    for split, chosen in parts.items():
        folder = out / split
        folder.mkdir(parents=True)
        entries, objects = [], []
        for number, (path, image, image_annotations) in enumerate(chosen):
            name = f"{number:04d}{path.suffix}"
            (folder / name).symlink_to(path)
            entries.append({**image, "id": number, "file_name": name})
            objects += [{**a, "id": len(objects) + i, "image_id": number} for i, a in enumerate(image_annotations)]
        document = {"images": entries, "annotations": objects, "categories": categories}
        (folder / "_annotations.coco.json").write_text(json.dumps(document))
    return out


def steps_per_second(data_root: Path, runs: Path, name: str, args: argparse.Namespace,
                     class_names: list[str] | None = None) -> float:
    config = make_config({
        "class_names": class_names, "name": name, "runs_dir": str(runs), "dataset": "folder",
        "data_root": str(data_root), "image_size": args.image_size, "model": "fcn_vgg16", "pretrained_backbone": None,
        "batch_size": 8, "max_epochs": 2, "limit_train_batches": args.steps, "limit_val_batches": 1,
        "num_workers": args.workers, "progress_bar": False, "test_after_training": False, "augment": False,
    })
    first, second = train(config).history[-2:]
    return (second["step"] - first["step"]) / (second["elapsed_s"] - first["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "facade_coco")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch (default 20)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each source, interleaved (default 2)")
    args = parser.parse_args()
    stamp = {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), **machine()}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["SEGLAB_CACHE"] = str(scratch / "cache")
        export = subset_export(args.source, scratch / "coco", args.images)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "seglab", "data", "check", "--root", str(export)], check=True,
                       capture_output=True)
        rasterised = time.perf_counter() - started
        subprocess.run([sys.executable, "-m", "seglab", "data", "convert", str(export), "--to", "masks",
                        str(scratch / "png")], check=True, capture_output=True)
        names = (scratch / "png" / "classes.txt").read_text().split("\n")[:-1]
        sources = {"COCO export": (export, None), "PNG masks": (scratch / "png", names)}
        rows = [{"data": data, "repeat": repeat, "steps/s": steps_per_second(
            root, scratch / "runs", f"{data.split()[0].lower()}{repeat}", args, class_names)}
            for repeat in range(1, args.repeats + 1) for data, (root, class_names) in sources.items()]
    setting = {"images": args.images, "image_size": args.image_size, "steps": args.steps, "workers": args.workers}
    append_rows("annotations", [{**stamp, **setting, "rasterisation_s": rasterised, **row} for row in rows])
    medians = {data: statistics.median(row["steps/s"] for row in rows if row["data"] == data) for data in sources}
    intro = (f"{written_by(' '.join(['python benchmarks/annotations.py', *sys.argv[1:]]), stamp)} {args.images} "
             f"training images, {args.image_size} px, batch 8, fcn_vgg16, {args.workers} workers, {args.steps} "
             f"steps per epoch, the two sources interleaved {args.repeats} times. Rasterisation before training "
             f"(seglab data check on a fresh cache, {args.images + 16} images): {rasterised:.1f} s. COCO / PNG "
             f"(medians): {medians['COCO export'] / medians['PNG masks']:.3f}.")
    path = write_report("annotations", "Training from an annotation export vs PNG masks", intro,
                        [Section("Steps per second, second epoch", rows=rows)])
    print(path.read_text())


if __name__ == "__main__":
    main()
