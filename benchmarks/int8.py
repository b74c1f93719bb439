"""seglab's INT8 ONNX export against smp at its best and against seglab's fastest float engine, on this CPU.

DeepLabV3+ on Xception-65 and Xception-41, output stride 16, 21 classes, random weights (as benchmarks/speed.py),
at 224 x 224 and 512 x 512, batch 1 and 8, 2 threads. Contenders, all in one process, in interleaved rounds
(`common.interleaved_seconds`, medians after warm-up), images/s:

- smp `DeepLabV3Plus(encoder_name="tu-xception65" / "tu-xception41", encoder_weights=None)` in fp32, bf16 and
  bf16 + channels_last: speed.py's bare forward pass; `smp best` is the fastest of the three in the same table;
- seglab's float engines: the `Predictor` as `seglab.load` builds it by default (precision auto: BatchNorm
  folded, bf16, channels_last), the fastest seglab engine in speed.md, and the fp32 ONNX export run by ONNX
  Runtime; `seglab float best` is the faster of the two in the same table;
- seglab INT8: `export_int8` (16 calibration images of 512 x 512, its default settings), run by `seglab.load`.

The seglab contenders run `Predictor.scores` (normalisation included). Then ONNX Runtime's own profile of the
X65 INT8 and fp32 graphs at 224 x 224, batch 8: which operators the optimised graph holds (integer kernels
or float fallbacks) and where the time goes.

smp imports torchvision: the stub in common.py (its STUB_NOTE). Run in the peers' environment:
    .venv-peers/bin/python benchmarks/int8.py           # ~30 min on 2 cores; writes results/int8.{json,md}
    .venv-peers/bin/python benchmarks/int8.py --render  # rewrites int8.md from int8.json
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import (
    RESULTS,
    STUB_NOTE,
    cpu_name,
    forward_runner,
    import_smp,
    interleaved_seconds,
    seglab_model,
    smp_model,
    write_checkpoint,
)
from seglab.data import ShapesDataset

MODELS = {"X65": ("deeplabv3plus_xception65", "tu-xception65"), "X41": ("deeplabv3plus_xception41", "tu-xception41")}
SIZES = (224, 512)
BATCHES = (1, 8)
CALIBRATION_SIZE = 512


def write_calibration(folder: Path, count: int) -> Path:
    """`count` shapes images of CALIBRATION_SIZE pixels as PNG files."""
    folder.mkdir(parents=True)
    dataset = ShapesDataset("val", size=CALIBRATION_SIZE)
    for index in range(count):
        image, _ = dataset[index]
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(folder / f"{index}.png")
    return folder


def operator_profile(path: Path, images: np.ndarray, workdir: Path, runs: int = 3) -> dict:
    """ONNX Runtime's profile of `path` on `images`: the optimised graph's operator counts and each operator
    type's share of the kernel time over `runs` runs (the first, with its one-off allocations, included)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    optimised = workdir / f"{path.stem}.optimised.onnx"
    options.optimized_model_filepath = str(optimised)
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(runs):
        session.run(None, {name: images})
    events = json.loads(Path(session.end_profiling()).read_text())
    spent: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"]
    total = sum(spent.values())
    counts = collections.Counter(node.op_type for node in onnx.load(str(optimised)).graph.node)
    return {"time_share": {op: value / total for op, value in spent.most_common()},
            "operators": dict(counts.most_common())}


def contenders(name: str, encoder: str, workdir: Path, calibration: Path) -> tuple[dict[str, Callable], dict]:
    """Factories of runners for one model: name -> (images -> runner), and what the export reported."""
    import seglab
    from seglab.export.int8 import export_int8
    from seglab.export.onnx import export_onnx

    torch.manual_seed(0)
    network = seglab_model(name)
    checkpoint = workdir / f"{name}.ckpt"
    write_checkpoint(network, checkpoint, name)
    export_onnx(checkpoint, workdir / f"{name}.onnx")
    started = time.perf_counter()
    # Random weights: the agreement check says nothing about accuracy here (int8_accuracy.py measures that).
    report = export_int8(checkpoint, workdir / f"{name}.int8.onnx", calibration=calibration, min_agreement=0.0)
    about = {"int8_export_seconds": time.perf_counter() - started, "quantization": report.quantization,
             "agreement_on_calibration_images": report.check.pixel_agreement}
    print(name, json.dumps(about), flush=True)
    default = seglab.load(checkpoint, precision="auto")
    onnx_fp32 = seglab.load(workdir / f"{name}.onnx")
    int8 = seglab.load(report.path)
    about["default_predictor"] = repr(default)
    smp = smp_model(encoder)
    factories: dict[str, Callable] = {}
    for precision, cl in (("fp32", False), ("bf16", False), ("bf16", True)):
        factories[f"smp {precision}{'+CL' if cl else ''}"] = (
            lambda images, p=precision, c=cl: forward_runner(smp, images, p, c))
    for label, predictor in (("seglab Predictor (default)", default), ("seglab onnxruntime fp32", onnx_fp32),
                             ("seglab INT8", int8)):
        factories[label] = lambda images, p=predictor: (lambda: p.scores(images))
    return factories, about


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds at 224 x 224")
    parser.add_argument("--rounds-512", type=int, default=3, help="timing rounds at 512 x 512")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--calibration-images", type=int, default=16)
    parser.add_argument("--out", default=str(RESULTS / "int8.json"))
    parser.add_argument("--render", action="store_true", help="only rewrite int8.md from the JSON results")
    parser.add_argument("--conditions", default=None,
                        help="with --render: what the machine was doing during the run, stored and shown")
    args = parser.parse_args()
    out = Path(args.out)
    if args.render:
        report = json.loads(out.read_text())
        if args.conditions:
            report["conditions"] = args.conditions
            out.write_text(json.dumps(report, indent=2))
        out.with_suffix(".md").write_text(render(report))
        return
    torch.set_num_threads(2)
    import_smp()  # installs the torchvision stub before torchmetrics (seglab's INT8 check) imports torchvision
    print(STUB_NOTE, flush=True)
    report: dict = {"machine": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "note": STUB_NOTE, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "rounds": {"224": args.rounds, "512": args.rounds_512}, "models": {}}
    import onnxruntime

    report["onnxruntime"] = onnxruntime.__version__

    def save() -> None:
        out.write_text(json.dumps(report, indent=2))
        out.with_suffix(".md").write_text(render(report))

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        calibration = write_calibration(workdir / "calibration", args.calibration_images)
        for key in args.models:
            name, encoder = MODELS[key]
            factories, about = contenders(name, encoder, workdir, calibration)
            entry = report["models"][key] = {**about, "results": {}}
            for size in SIZES:
                for batch in BATCHES:
                    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
                    runners = {label: make(images) for label, make in factories.items()}
                    rounds = args.rounds if size == 224 else args.rounds_512
                    seconds = interleaved_seconds(runners, rounds, warmup=2 if size == 224 else 1)
                    figures = {label: batch / value for label, value in seconds.items()}
                    entry["results"][f"{size}_b{batch}"] = figures
                    print(key, size, batch, json.dumps({k: round(v, 2) for k, v in figures.items()}), flush=True)
                    save()
            if key == "X65":
                images = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0)).numpy()
                images = (images - 0.5) / 0.5  # as the spec of write_checkpoint normalises
                entry["profile_224_b8"] = {
                    "int8": operator_profile(workdir / f"{name}.int8.onnx", images, workdir),
                    "fp32": operator_profile(workdir / f"{name}.onnx", images, workdir)}
                save()
            del factories
    save()


def render(report: dict) -> str:
    lines = [
        "# INT8: seglab's quantised ONNX export against smp and seglab's float engines", "",
        f"Written by `.venv-peers/bin/python benchmarks/int8.py` ({report['started']}): **{report['machine']}**, "
        f"{report['threads']} threads, torch {report['torch']}, onnxruntime {report.get('onnxruntime', '?')}. "
        "DeepLabV3+ at output stride 16, 21 classes, random weights; images/s, medians of interleaved rounds "
        f"({report['rounds']['224']} at 224 x 224, {report['rounds']['512']} at 512 x 512, after warm-up). "
        "`smp best`: smp's fastest of fp32, bf16 and bf16 + channels_last (CL) in the same table; `seglab float "
        "best`: the faster of seglab's default Predictor (bf16, BatchNorm folded, channels_last) and its fp32 ONNX "
        "Runtime engine. seglab contenders include input normalisation (`Predictor.scores`).", "",
        f"Note: {report['note']}."]
    if report.get("conditions"):
        lines += ["", f"**Conditions:** {report['conditions']}"]
    for key, entry in report["models"].items():
        q = entry["quantization"]
        lines += ["", f"## {key} (`{entry['default_predictor'].split(',')[0].split('=')[1]}`)", "",
                  f"INT8 export: {q['format']}, {q['activations']} activations, {q['weights']} "
                  f"{q['weight_granularity']} weights, {q['calibration_method']} calibration on "
                  f"{q['calibration_images']} images of 512 x 512: **{entry['int8_export_seconds']:.0f} s** for "
                  "the whole `export_int8` (float export, parity check, calibration, check).", "",
                  "| size | batch | smp best (which) | seglab float best (which) | seglab INT8 | INT8 / smp best | "
                  "INT8 / seglab float best |", "|---|---|---|---|---|---|---|"]
        for setting, figures in entry["results"].items():
            size, batch = setting.split("_b")
            smp_name = max((n for n in figures if n.startswith("smp")), key=figures.get)
            float_name = max(("seglab Predictor (default)", "seglab onnxruntime fp32"), key=figures.get)
            int8 = figures["seglab INT8"]
            lines.append(f"| {size} | {batch} | {figures[smp_name]:.2f} ({smp_name.removeprefix('smp ')}) | "
                         f"{figures[float_name]:.2f} ({float_name.removeprefix('seglab ')}) | {int8:.2f} | "
                         f"**{int8 / figures[smp_name]:.2f}x** | {int8 / figures[float_name]:.2f}x |")
        lines += ["", "All contenders, images/s:", "",
                  "| size, batch | " + " | ".join(next(iter(entry["results"].values()))) + " |",
                  "|---|" + "---|" * len(next(iter(entry["results"].values())))]
        for setting, figures in entry["results"].items():
            lines.append(f"| {setting.replace('_b', ', b')} | " + " | ".join(f"{v:.2f}" for v in figures.values())
                         + " |")
        profile = entry.get("profile_224_b8")
        if profile:
            lines += ["", f"ONNX Runtime profile, {key} at 224 x 224, batch 8 (share of kernel time per operator "
                      "type; operator counts of the graph ONNX Runtime optimised and ran):", "",
                      "| graph | time share (top 6) | operators |", "|---|---|---|"]
            for graph, found in profile.items():
                shares = ", ".join(f"{op} {share:.0%}" for op, share in list(found["time_share"].items())[:6])
                ops = ", ".join(f"{op} {count}" for op, count in found["operators"].items())
                lines.append(f"| {graph} | {shares} | {ops} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
