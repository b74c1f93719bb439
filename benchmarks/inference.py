"""Inference checks that need a real checkpoint or a large image, on seglab's public API (`seglab.load`,
`Predictor`, `evaluate`). Each run appends a row to benchmarks/results/inference.jsonl; inference.md is the
curated reading of those rows.

    python benchmarks/inference.py agreement runs/demo/checkpoints/best.ckpt   # bf16 vs fp32, tiles vs whole
    python benchmarks/inference.py memory --precision fp32                     # peak RSS, 4000x3000, tile 512
    python benchmarks/inference.py memory --side 512 --tile 256                # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import numpy as np
import torch

import seglab
from harness import CLASSES, append_rows, machine, peak_rss_gb, seglab_model, write_checkpoint
from seglab.data import ShapesDataset
from seglab.evaluation import evaluate
from seglab.inference import Predictor


def record(row: dict) -> None:
    row = {**machine(), **row}
    print(json.dumps(row))
    append_rows("inference", [row])


def timed(function, *arguments, **options):
    start = time.perf_counter()
    value = function(*arguments, **options)
    return value, round(time.perf_counter() - start, 2)


def agreement(args: argparse.Namespace) -> None:
    """Argmax agreement over the shapes test split: precision auto vs fp32, and tiled vs whole-image."""
    exact = seglab.load(args.checkpoint, precision="fp32")
    fast = seglab.load(args.checkpoint, precision="auto")
    test = ShapesDataset("test", size=args.size)
    images = torch.stack([test[i][0] for i in range(len(test))])
    reference, fp32_seconds = timed(lambda: np.stack(exact.predict(images)))
    candidate, fast_seconds = timed(lambda: np.stack(fast.predict(images)))
    row = {"check": "precision agreement", "checkpoint": str(args.checkpoint), "images": len(test),
           "size": args.size, "fast_precision": fast.precision,
           "argmax_agreement": float((candidate == reference).mean()),
           "test_miou_fp32": float(evaluate(exact, test).scores["miou"]),
           "test_miou_fast": float(evaluate(fast, test).scores["miou"]),
           "seconds_fp32": fp32_seconds, "seconds_fast": fast_seconds}
    # Tiles vs whole image at the working scale: 2x2 mosaics of test images, so the shapes keep their scale.
    working = exact.spec.working_size[0] if exact.spec.working_size else args.size
    native = Predictor(exact.model, dataclasses.replace(exact.spec, working_size=None,
                                                       working_scale=working / args.size))
    agree = []
    for first in range(0, len(test) - 3, 4):
        parts = [(images[first + i].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for i in range(4)]
        mosaic = np.concatenate([np.concatenate(parts[:2], 1), np.concatenate(parts[2:], 1)], 0)
        agree.append((native.predict(mosaic, tile=args.tile, overlap=0.25) == native.predict(mosaic)).mean())
    record({**row, "tile": args.tile, "tile_overlap": 0.25, "tile_vs_whole_agreement": float(np.mean(agree))})


def memory(args: argparse.Namespace, workdir: str) -> None:
    """Peak RSS of predicting one large image with random-weight Xception-65 DeepLabV3+ in tile windows."""
    checkpoint = write_checkpoint(seglab_model(), f"{workdir}/x65.ckpt")
    predictor = seglab.load(checkpoint, precision=args.precision, tile_batch=args.tile_batch)
    height, width = args.side * 3 // 4, args.side
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    before = peak_rss_gb()
    labels, seconds = timed(predictor.predict, image, tile=args.tile, overlap=0.25)
    if labels.shape != (height, width):
        raise SystemExit(f"predicted a {labels.shape} map for a {height}x{width} image")
    record({"check": "tiled memory", "model": predictor.spec.model, "classes": CLASSES, "image": f"{width}x{height}",
            "tile": args.tile, "overlap": 0.25, "tiles_per_forward": predictor.tile_batch,
            "precision": predictor.precision, "peak_rss_mb_before_predict": round(before * 1024),
            "peak_rss_mb": round(peak_rss_gb() * 1024), "seconds": seconds})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("agreement", help="bf16 vs fp32 and tiles vs whole image on the shapes test split")
    check.add_argument("checkpoint")
    check.add_argument("--size", type=int, default=128, help="test image side (default 128, the demo's)")
    check.add_argument("--tile", type=int, default=64, help="window side at the working size (default 64)")
    peak = commands.add_parser("memory", help="peak RSS for a 4000x3000 image, X65, tile 512")
    peak.add_argument("--precision", default="fp32")
    peak.add_argument("--side", type=int, default=4000, help="image width (height: 3/4 of it)")
    peak.add_argument("--tile", type=int, default=512)
    peak.add_argument("--tile-batch", type=int, default=None, help="windows per forward (default: the Predictor's)")
    args = parser.parse_args()
    if args.command == "agreement":
        agreement(args)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            memory(args, workdir)


if __name__ == "__main__":
    main()
