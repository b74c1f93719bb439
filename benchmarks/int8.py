"""seglab's INT8 ONNX export against smp at its best and against seglab's fastest float engine, on this CPU.

DeepLabV3+ on Xception-65 and Xception-41, output stride 16, 21 classes, random weights, at 224 x 224 and
512 x 512, batch 1 and 8, 2 threads; images/s, medians of interleaved rounds after warm-up, all in one process:

- smp `DeepLabV3Plus(tu-xception65 / tu-xception41)` in fp32, bf16 and bf16 + channels_last (a bare forward
  pass); `smp best` is the fastest of the three in the same table;
- seglab's float engines through `Predictor.scores` (normalisation included): `seglab.load` with precision
  auto, and the fp32 ONNX export on ONNX Runtime; `seglab float best` is the faster;
- seglab INT8: `export_int8` (its defaults, calibrated on 16 shapes images of 512 x 512), run by `seglab.load`.

Run in the peers' environment (`bash benchmarks/peers.sh`; smp's torchvision stub: harness.STUB_NOTE):
    .venv-peers/bin/python benchmarks/int8.py                 # ~30 min on 2 cores; results/int8.{jsonl,md}
    .venv-peers/bin/python benchmarks/int8.py --models X41 --sizes 64 --batches 1 --rounds 1   # a smoke run
    python benchmarks/int8.py --report                        # rewrites int8.md from the latest run's rows
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import seglab
from harness import (
    STUB_NOTE,
    Section,
    append_rows,
    import_smp,
    interleaved_seconds,
    latest_run,
    run_stamp,
    scores_runners,
    seglab_predictors,
    smp_forward_runners,
    smp_model,
    write_report,
    written_by,
)
from seglab.data import export_shapes
from seglab.export import export_int8

MODELS = {"X65": ("deeplabv3plus_xception65", "tu-xception65"), "X41": ("deeplabv3plus_xception41", "tu-xception41")}
FLOAT_ENGINES = ("seglab Predictor (auto)", "seglab onnxruntime fp32")
CALIBRATION_IMAGES = 16  # shapes val images of 512 x 512; export_int8 calibrates on its first 16


def contenders(key: str, workdir: Path, calibration: Path) -> tuple[Callable[[torch.Tensor], dict], dict]:
    """The runners of one model's contenders on given images, and what its INT8 export reported."""
    name, encoder = MODELS[key]
    checkpoint, floats = seglab_predictors(workdir, name)
    started = time.perf_counter()
    # Random weights: the agreement check says nothing about accuracy here (int8_accuracy.md measured that).
    report = export_int8(checkpoint, workdir / f"{name}.int8.onnx", calibration=calibration, min_agreement=0.0)
    about = {"model": key, "int8_export_seconds": round(time.perf_counter() - started, 1),
             "quantization": report.quantization}
    predictors = {label: floats[label] for label in FLOAT_ENGINES} | {"seglab INT8": seglab.load(report.path)}
    smp = smp_model(encoder)
    return (lambda images: smp_forward_runners(smp, images) | scores_runners(predictors, images)), about


def summary(figures: dict[str, float]) -> dict:
    smp = max((name for name in figures if name.startswith("smp")), key=figures.__getitem__)
    best_float = max(FLOAT_ENGINES, key=figures.__getitem__)
    int8 = figures["seglab INT8"]
    return {"smp best": f"{figures[smp]:.2f} ({smp.removeprefix('smp ')})",
            "seglab float best": f"{figures[best_float]:.2f} ({best_float.removeprefix('seglab ')})",
            "seglab INT8": int8, "INT8 / smp best": f"{int8 / figures[smp]:.2f}x",
            "INT8 / float best": f"{int8 / figures[best_float]:.2f}x"}


def report() -> None:
    latest = latest_run("int8")
    intro = (written_by(".venv-peers/bin/python benchmarks/int8.py", latest[0]) + " DeepLabV3+ at output stride 16, "
             "21 classes, random weights; images/s, medians of interleaved rounds after warm-up. "
             f"Note: {STUB_NOTE}. Earlier runs: int8.jsonl and INDEX.md.")
    sections = []
    for key in dict.fromkeys(row["model"] for row in latest):
        export = next(row for row in latest if row["model"] == key and "quantization" in row)
        timings = [row for row in latest if row["model"] == key and "figures" in row]
        sections.append(Section(
            key, f"`export_int8` took {export['int8_export_seconds']} s (float export, parity check, calibration, "
            f"check): {export['quantization']}.",
            [{"size": row["size"], "batch": row["batch"], **summary(row["figures"])} for row in timings]))
        sections.append(Section(f"{key}: every contender, images/s", rows=[
            {"size": row["size"], "batch": row["batch"], **row["figures"]} for row in timings]))
    write_report("int8", "INT8: seglab's quantised ONNX export against smp and seglab's float engines", intro,
                 sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (at 512 px: 3 at most)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--report", action="store_true", help="only rewrite int8.md from int8.jsonl")
    args = parser.parse_args()
    if args.report:
        report()
        return
    torch.set_num_threads(2)
    import_smp()  # installs the torchvision stub before torchmetrics (seglab's INT8 check) imports torchvision
    stamp = run_stamp()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        export_shapes(workdir / "calibration", size=512, counts={"val": CALIBRATION_IMAGES})
        for key in args.models:
            runners_on, about = contenders(key, workdir, workdir / "calibration" / "val_imgs")
            append_rows("int8", [{**stamp, **about}])
            for size in args.sizes:
                for batch in args.batches:
                    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
                    rounds = args.rounds if size < 512 else min(args.rounds, 3)
                    seconds = interleaved_seconds(runners_on(images), rounds, warmup=2 if size < 512 else 1)
                    figures = {label: batch / value for label, value in seconds.items()}
                    append_rows("int8", [{**stamp, "model": key, "size": size, "batch": batch, "figures": figures}])
                    print(key, size, batch, {label: round(value, 2) for label, value in figures.items()}, flush=True)
    report()


if __name__ == "__main__":
    main()
