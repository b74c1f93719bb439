"""A stand-in for "your own multi-class photographs": shapes v1 drawn at 480x360 (W x H) in SegNet's folder
layout, trained with `configs/folder_multiclass.yaml` as shipped, only data_root, class_names and the budget
changed. It measures what the recipe does on non-square data on this machine (images/s, val and test mIoU);
it says nothing about real photographs.

    python benchmarks/real_data_proxy.py --minutes 8      # writes runs/benchmarks/real_data_proxy/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.data import ShapesDataset
from seglab.training.config import load_config
from seglab.training.run import train

SPLITS = {"train": 200, "val": 30, "test": 30}


def write_tree(root: Path) -> None:
    for split, count in SPLITS.items():
        images, masks = root / split, root / f"{split}annot"
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        data = ShapesDataset(split, size=(360, 480), length=count)
        for index in range(count):
            image, mask = data[index]
            Image.fromarray((image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(
                images / f"{index:04d}.png")
            Image.fromarray(mask.numpy().astype(np.uint8)).save(masks / f"{index:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--data", default="runs/benchmarks/street_proxy_data")
    parser.add_argument("--runs-dir", default="runs/benchmarks")
    args = parser.parse_args()
    root = Path(args.data)
    if not (root / "testannot").is_dir():
        write_tree(root)
    config = load_config("configs/folder_multiclass.yaml", [
        f"data_root={root}", "class_names=[background, circle, triangle, square]", f"max_minutes={args.minutes}",
        "max_epochs=null", f"runs_dir={args.runs_dir}", "name=real_data_proxy", "progress_bar=false"])
    result = train(config, overwrite=True)
    history = result.history
    images, seconds = history[-1]["images_seen"], history[-1]["elapsed_s"]
    print(json.dumps({"minutes": args.minutes, "images_seen": images, "images_per_s_with_validation":
                      round(images / seconds, 2), "best_val_miou": round(result.best_miou or float("nan"), 4),
                      "test_miou": round(float(result.test.evaluation.scores["miou"]), 4) if result.test else None}))


if __name__ == "__main__":
    main()
