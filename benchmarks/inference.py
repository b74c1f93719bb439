"""Inference checks that need a real checkpoint or a large image, on seglab's public API (`seglab.load`,
`Predictor`). Each run appends one JSON line to benchmarks/results/inference.jsonl.

    python benchmarks/inference.py agreement runs/demo/checkpoints/best.ckpt   # bf16 vs fp32, tiles vs whole
    python benchmarks/inference.py memory --precision fp32                     # peak RSS, 4000x3000, tile 512
    python benchmarks/inference.py paths runs/demo/checkpoints/best.ckpt       # every fast path vs plain fp32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import time

import numpy as np
import torch

from common import RESULTS, append_rows


def record(row: dict) -> None:
    row = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
           f"{torch.get_num_threads()} threads, torch {torch.__version__}", **row}
    print(json.dumps(row))
    append_rows(RESULTS / "inference.jsonl", [row])


def agreement(args: argparse.Namespace) -> None:
    """Argmax agreement over the shapes test split: precision auto vs fp32, and tiled vs whole-image."""
    import seglab
    from seglab.data import ShapesDataset
    from seglab.evaluation.loop import evaluate
    from seglab.inference import Predictor

    exact = seglab.load(args.checkpoint, precision="fp32")
    fast = seglab.load(args.checkpoint, precision="auto")
    test = ShapesDataset("test", size=args.size or 128)
    images = torch.stack([test[i][0] for i in range(len(test))])
    start = time.perf_counter()
    reference = np.stack(exact.predict(images))
    fp32_seconds = time.perf_counter() - start
    start = time.perf_counter()
    candidate = np.stack(fast.predict(images))
    fast_seconds = time.perf_counter() - start
    row = {"check": "precision agreement", "checkpoint": str(args.checkpoint), "images": len(test),
           "size": test.size[0], "fast_precision": fast.precision,
           "argmax_agreement": float((candidate == reference).mean()),
           "test_miou_fp32": float(evaluate(exact, test).scores["miou"]),
           "test_miou_fast": float(evaluate(fast, test).scores["miou"]),
           "seconds_fp32": round(fp32_seconds, 2), "seconds_fast": round(fast_seconds, 2)}
    # Tiles vs whole image at the working scale: 2x2 mosaics of test images, so the shapes keep their scale.
    native = Predictor(exact.model, dataclasses.replace(exact.spec, working_size=None,
                                                       working_scale=exact.spec.working_size[0] / test.size[0]))
    agree = []
    for first in range(0, len(test) - 3, 4):
        parts = [(images[first + i].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for i in range(4)]
        mosaic = np.concatenate([np.concatenate(parts[:2], 1), np.concatenate(parts[2:], 1)], 0)
        agree.append((native.predict(mosaic, tile=args.tile, overlap=0.25) == native.predict(mosaic)).mean())
    row.update({"tile": args.tile, "tile_overlap": 0.25, "tile_vs_whole_agreement": float(np.mean(agree))})
    record(row)


def fast_paths(args: argparse.Namespace) -> None:
    """Argmax agreement over the shapes test split between the plain fp32 network (no folding, NCHW) and each
    fast path: the default Predictor in fp32 and in precision auto (BatchNorm folded, channels_last auto), the
    compiled Predictor, and the ONNX Runtime engine of an export."""
    import tempfile
    from pathlib import Path

    import seglab
    from seglab.data import ShapesDataset
    from seglab.evaluation.loop import evaluate
    from seglab.export.onnx import export_onnx
    from seglab.inference import read_checkpoint
    from seglab.inference.loading import build_trained_model, checkpoint_path, model_state, spec_from_checkpoint
    from seglab.inference.predictor import predict_logits

    path = checkpoint_path(args.checkpoint)
    saved = read_checkpoint(path)
    spec = spec_from_checkpoint(saved, path)
    plain = build_trained_model(spec, model_state(saved, path), path)
    test = ShapesDataset("test", size=args.size or 128)
    images = torch.stack([test[i][0] for i in range(len(test))])
    with torch.inference_mode():
        reference = torch.cat([predict_logits(plain, images[i:i + 8], spec, channels_last=False).argmax(1)
                               for i in range(0, len(images), 8)]).numpy()
    with tempfile.TemporaryDirectory() as scratch:
        onnx_file = export_onnx(path, Path(scratch) / "model.onnx").path
        paths = {"fp32 (folded)": seglab.load(path), "auto (folded)": seglab.load(path, precision="auto"),
                 "auto compiled": seglab.load(path, precision="auto", compile=True),
                 "onnxruntime": seglab.load(onnx_file)}
        row = {"check": "fast paths vs plain fp32", "checkpoint": str(args.checkpoint), "images": len(test),
               "size": test.size[0]}
        for name, predictor in paths.items():
            predicted = np.stack(predictor.predict(images))
            row[f"{name}: {predictor!r}"] = {"argmax_agreement": float((predicted == reference).mean()),
                                             "test_miou": float(evaluate(predictor, test).scores["miou"])}
    record(row)


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of predicting one 4000x3000 image with deeplabv3plus_xception65 in tile-512 windows."""
    from seglab.data.classes import default_palette
    from seglab.inference import InferenceSpec, Predictor
    from seglab.models import build_model

    classes = args.classes
    spec = InferenceSpec(model="deeplabv3plus_xception65", model_options={}, num_classes=classes,
                         class_names=tuple(f"class_{i}" for i in range(classes)), palette=default_palette(classes),
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), working_scale=1.0)
    predictor = Predictor(build_model(spec.model, num_classes=classes), spec, device="cpu",
                          precision=args.precision, tile_batch=args.tile_batch)
    image = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    labels = predictor.predict(image, tile=args.tile, overlap=0.25)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert labels.shape == (3000, 4000)
    record({"check": "tiled memory", "model": spec.model, "classes": classes, "image": "4000x3000", "tile": args.tile,
            "overlap": 0.25, "tiles_per_forward": predictor.tile_batch, "precision": predictor.precision,
            "peak_rss_mb_before_predict": round(before), "peak_rss_mb": round(peak), "seconds": round(seconds, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("agreement", help="bf16 vs fp32 and tiles vs whole image on the shapes test split")
    check.add_argument("checkpoint")
    check.add_argument("--size", type=int, default=None, help="test image side (default 128, the demo's)")
    check.add_argument("--tile", type=int, default=64, help="window side at the working size (default 64)")
    check.set_defaults(handler=agreement)
    paths = commands.add_parser("paths", help="every fast path against the plain fp32 network, shapes test split")
    paths.add_argument("checkpoint")
    paths.add_argument("--size", type=int, default=None, help="test image side (default 128, the demo's)")
    paths.set_defaults(handler=fast_paths)
    peak = commands.add_parser("memory", help="peak RSS for a 4000x3000 image, X65, tile 512")
    peak.add_argument("--precision", default="fp32")
    peak.add_argument("--tile", type=int, default=512)
    peak.add_argument("--classes", type=int, default=21)
    peak.add_argument("--tile-batch", type=int, default=None, help="windows per forward (default: the Predictor's)")
    peak.set_defaults(handler=memory)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
