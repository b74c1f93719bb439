"""INT8 export: the calibration choice, made on validation data, and the accuracy it costs, scored once on test.

On a short shapes run (`seglab train benchmarks/int8_shapes.yaml`: Xception-41, output stride 16, 64 px):

1. Selection, validation split only. Its first 16 images calibrate (as `seglab export --calibration` reads
   them: PNG files), the other 84 are the check set (images and masks). For every calibration method (MinMax,
   Entropy, Percentile) with all layers quantised and with the ends kept in float (`--keep-float ends`), and
   MinMax with per-tensor weights: pixel agreement with the float model and both models' mIoU on the check
   set, calibration seconds, and the INT8 network's speed on one 256 x 256 image (interleaved rounds).
2. Test, once: `export_int8` with seglab's defaults (calibrated and checked on validation images as above),
   then the float export and the INT8 file scored on the test split (seglab's `evaluate`), with their pixel
   agreement.

Run (2 CPU cores: about 5 min after the run is trained):
    seglab train benchmarks/int8_shapes.yaml
    python benchmarks/int8_accuracy.py [--run runs/int8_shapes]   # writes results/int8_accuracy.{json,md}

Any other run folder works the same way; a real-photo model, scored with the defaults only (the selection
above made on shapes; full-resolution photographs make every candidate minutes long on 2 cores):
    python benchmarks/int8_accuracy.py --run runs/benchmarks/real_data/facade50 --skip-selection \
        --out benchmarks/results/int8_accuracy_facade.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import RESULTS, cpu_name, interleaved_seconds
from seglab.evaluation.checkpoint import folder_dataset, run_datasets
from seglab.export.int8 import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_IMAGES,
    QuantizationSettings,
    agreement,
    export_int8,
    image_paths,
    quantize,
)
from seglab.export.onnx import export_onnx
from seglab.inference import read_checkpoint
from seglab.inference.loading import checkpoint_path
from seglab.inference.onnx_runtime import OnnxRuntimeModel, load_onnx

SPEED_SIZE = 256


def write_pairs(dataset, indices, folder: Path) -> Path:
    """Items `indices` of `dataset` as PNG images and masks in folder/images and folder/masks."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for index in indices:
        image, mask = dataset[index]
        pixels = (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{index:04d}.png")
        Image.fromarray(mask.numpy().astype(np.uint8)).save(folder / "masks" / f"{index:04d}.png")
    return folder


def candidates() -> list[QuantizationSettings]:
    found = [QuantizationSettings(calibration_method=method, keep_float=keep)
             for method in CALIBRATION_METHODS for keep in ("none", "ends")]
    return [*found, QuantizationSettings(calibration_method="minmax", per_channel=False)]


def label(settings: QuantizationSettings) -> str:
    return (f"{settings.calibration_method}, keep-float {settings.keep_float}, "
            f"{'per-channel' if settings.per_channel else 'per-tensor'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/int8_shapes", help="the run folder of benchmarks/int8_shapes.yaml")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per candidate")
    parser.add_argument("--skip-selection", action="store_true",
                        help="score seglab's defaults only (no candidate table, no speed rounds)")
    parser.add_argument("--out", default=str(RESULTS / "int8_accuracy.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    path = checkpoint_path(args.run)
    checkpoint = read_checkpoint(path)
    datasets = run_datasets(checkpoint, path)
    report: dict = {"machine": cpu_name(), "threads": torch.get_num_threads(), "checkpoint": str(path),
                    "model": describe(checkpoint["hyper_parameters"]["config"], datasets),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"), "calibration_images": DEFAULT_CALIBRATION_IMAGES}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        val = datasets["val"]
        count = DEFAULT_CALIBRATION_IMAGES
        calibration = write_pairs(val, range(count), work / "calibration") / "images"
        check = write_pairs(val, range(count, len(val)), work / "check")
        report["check_images"] = len(val) - count
        float_path = work / "float.onnx"
        export_onnx(path, float_path)
        float_model = load_onnx(float_path)
        check_set = folder_dataset(float_model, check / "images", check / "masks")
        calibration_paths = image_paths(calibration, "calibration")
        rows, networks = [], {"float (ONNX Runtime fp32)": OnnxRuntimeModel(float_path)}
        for index, settings in enumerate([] if args.skip_selection else candidates()):
            int8_path = work / f"int8_{index}.onnx"
            started = time.perf_counter()
            quantize(float_path, int8_path, float_model.spec, calibration_paths, settings, work)
            seconds = time.perf_counter() - started
            result = agreement(float_model, load_onnx(int8_path), check_set, "validation images")
            rows.append({"settings": label(settings), "calibration_seconds": seconds,
                         "pixel_agreement": result.pixel_agreement, "miou_vs_float": result.miou_vs_float,
                         "miou_float": result.miou_float, "miou_int8": result.miou_int8})
            networks[label(settings)] = OnnxRuntimeModel(int8_path)
            print(json.dumps(rows[-1]), flush=True)
        if rows:
            images = torch.rand(1, 3, SPEED_SIZE, SPEED_SIZE, generator=torch.Generator().manual_seed(0))
            seconds = interleaved_seconds({name: lambda m=model: m(images) for name, model in networks.items()},
                                          args.rounds, warmup=2)
            report["images_per_second"] = {name: 1 / value for name, value in seconds.items()}
        report["selection"] = rows

        # The defaults, exported as a user would, then scored once on the test split.
        exported = export_int8(path, work / "model.int8.onnx", calibration=calibration, check=check / "images",
                               check_masks=check / "masks")
        report["default_export"] = exported.quantization
        test = agreement(float_model, load_onnx(exported.path), datasets["test"], "test images")
        report["test"] = {"images": test.images, "pixel_agreement": test.pixel_agreement,
                          "miou_vs_float": test.miou_vs_float, "miou_float": test.miou_float,
                          "miou_int8": test.miou_int8}
        print("test", json.dumps(report["test"]), flush=True)
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(render(report))


def describe(config: dict, datasets: dict) -> str:
    """The run in words: its config name, model, output stride, working size and split sizes."""
    size = config.get("image_size")
    stride = config.get("output_stride")
    return (f"run `{config.get('name')}`: `{config.get('model')}`"
            + (f", output stride {stride}" if stride else "")
            + (f", {size} px" if size else ", images at their own size")
            + ", splits " + " / ".join(f"{name} {len(data)}" for name, data in datasets.items()))


def render(report: dict) -> str:
    test = report["test"]
    lines = [
        "# INT8 export: calibration choice (validation) and accuracy cost (test)", "",
        f"Written by `python benchmarks/int8_accuracy.py` ({report['started']}): {report['machine']}, "
        f"{report['threads']} threads. Model: `{report['checkpoint']}` ({report['model']}).", ""]
    if report["selection"]:
        speeds = report["images_per_second"]
        base = speeds["float (ONNX Runtime fp32)"]
        lines += [
            f"## Selection on the validation split ({report['calibration_images']} images calibrate, "
            f"{report['check_images']} others check)", "",
            f"Speed: the INT8 network alone (ONNX Runtime) on one {SPEED_SIZE} x {SPEED_SIZE} image, against the "
            "float export in the same interleaved rounds.", "",
            "| settings | pixel agreement | mIoU vs float | mIoU float | mIoU INT8 | calibration s | speed vs float |",
            "|---|---|---|---|---|---|---|"]
        for row in report["selection"]:
            lines.append(f"| {row['settings']} | {row['pixel_agreement']:.2%} | {row['miou_vs_float']:.2%} | "
                         f"{row['miou_float']:.2%} | {row['miou_int8']:.2%} | {row['calibration_seconds']:.1f} | "
                         f"{speeds[row['settings']] / base:.2f}x |")
    else:
        lines += ["No selection table here (`--skip-selection`): seglab's defaults, as chosen on the shapes "
                  "validation split (int8_accuracy.md)."]
    default = report["default_export"]
    lines += ["", "## Test split, once, with the defaults", "",
              f"Defaults: {default['calibration_method']}, keep-float {default['keep_float']}, "
              f"{default['weight_granularity']} {default['weights']} weights, {default['activations']} activations, "
              f"calibrated on {default['calibration_images']} validation images.", "",
              "| images | mIoU float (ONNX fp32) | mIoU INT8 | pixel agreement | mIoU of INT8 vs float |",
              "|---|---|---|---|---|",
              f"| {test['images']} | {test['miou_float']:.2%} | {test['miou_int8']:.2%} | "
              f"{test['pixel_agreement']:.2%} | {test['miou_vs_float']:.2%} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
