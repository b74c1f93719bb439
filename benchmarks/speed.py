"""seglab's speed against segmentation_models_pytorch (smp) on this CPU, with the machine's ceiling.

DeepLabV3+ on Xception-65 at output stride 16 (the same architecture in both; smp through timm's
`tu-xception65`), 21 classes, 2 threads. Everything runs in one process; the contenders of each task run in
interleaved rounds after a warm-up, and the figures are medians of images/s.

- inference at 224x224, batch 1 and 8: smp in fp32, bf16 and bf16 + channels_last (a bare forward pass under
  `torch.inference_mode`), seglab's network the same three ways, seglab's `Predictor` as `seglab.load` builds
  it by default (precision auto: BatchNorm folded, bf16, channels_last auto), the same with `compile=True`
  (torch.compile with frozen weights; its compile time is reported apart), in fp32, and seglab's ONNX Runtime
  engine (`export_onnx` + `seglab.load`, fp32);
- training at 224x224 and 240x320, batch 8: smp and seglab's network in a bare loop (cross-entropy, backward,
  fused AdamW) in fp32, bf16 and bf16 + channels_last; then `seglab.training.train` with its default settings
  on a folder of images of that size (Lightning, data loading and augmentation included), images/s of its
  training steps;
- the demo's step (Xception-41, 64 px, batch 16) in seglab's bare loop, NCHW against channels_last;
- the ceiling: a large 3x3 convolution's GFLOP/s in fp32 and bf16, against which each figure is also given
  as a share (FLOPs per image / time); and the depthwise convolutions' share of seglab's bf16 forward time;
- peak RSS of a training process (X65 @224, batch 8): smp's bare loop at its best against `seglab train`.

smp imports torchvision, whose compiled operators do not load beside this CPU-only torch; its pure-Python parts
do, once `torchvision._meta_registrations` is replaced by an empty module. This benchmark does that, and says so.

Run in the peers' environment (benchmarks/peers.sh builds it):
    .venv-peers/bin/python benchmarks/speed.py          # ~25 min; writes benchmarks/results/speed.{json,md}
    .venv-peers/bin/python benchmarks/speed.py --render # rewrites speed.md from speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from common import (
    CLASSES,
    RESULTS,
    STUB_NOTE,
    forward_runner,
    interleaved_seconds,
    seglab_model,
    smp_model,
    write_checkpoint,
)
from seglab.models import build_model
from seglab.models.layers import DepthwiseConv2d
from seglab.training.losses import build_loss
from seglab.training.step import training_step


def training_runner(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, precision: str,
                    channels_last: bool) -> Callable[[], None]:
    model = model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss = build_loss("ce")

    def run() -> None:
        training_step(model, images, masks, loss, optimizer, precision=precision)

    return run


def forward_flops(model: torch.nn.Module, size: tuple[int, int]) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.rand(1, 3, *size))
    return float(counter.get_total_flops())


def conv_ceiling(rounds: int) -> dict[str, float]:
    """GFLOP/s of large convolutions (3x3 and 1x1, 256-1024 channels, batch 8), the best shape and memory
    format per dtype: what this CPU's convolution kernels reach at best."""
    best: dict[str, float] = {}
    for channels, kernel, side in ((256, 3, 56), (512, 3, 28), (1024, 1, 28)):
        images = torch.rand(8, channels, side, side)
        conv = torch.nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False).eval()
        flops = 2 * 8 * channels * channels * kernel * kernel * side * side
        runners = {(precision, cl): forward_runner(conv, images, precision, cl)
                   for precision in ("fp32", "bf16") for cl in (False, True)}
        for (precision, _), seconds in interleaved_seconds(runners, rounds, warmup=2).items():
            best[precision] = max(best.get(precision, 0.0), flops / seconds / 1e9)
    return best


def depthwise_share(model: torch.nn.Module, images: torch.Tensor, rounds: int) -> dict[str, float]:
    """Share of seglab's bf16 + channels_last forward time spent in depthwise convolutions, and their share of
    the FLOPs (timed with hooks around every depthwise layer)."""
    model = model.eval().to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
    spent = [0.0]
    starts: dict[int, float] = {}
    layers = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]
    handles = []
    for layer in layers:
        handles.append(layer.register_forward_pre_hook(lambda m, a: starts.__setitem__(id(m), time.perf_counter())))
        handles.append(layer.register_forward_hook(
            lambda m, a, o: spent.__setitem__(0, spent[0] + time.perf_counter() - starts[id(m)])))
    run = forward_runner(model, images, "bf16", False)
    run()
    totals, depthwise = [], []
    for _ in range(rounds):
        spent[0] = 0.0
        start = time.perf_counter()
        run()
        totals.append(time.perf_counter() - start)
        depthwise.append(spent[0])
    for handle in handles:
        handle.remove()
    size = tuple(images.shape[-2:])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 3, *size))
    flops_by_module = counter.get_flop_counts()
    total_flops = counter.get_total_flops()
    names = {name for name, module in model.named_modules() if isinstance(module, DepthwiseConv2d)}
    dw_flops = sum(sum(counts.values()) for name, counts in flops_by_module.items()
                   if name.removeprefix(f"{type(model).__name__}.") in names)
    return {"time_share": statistics.median(d / t for d, t in zip(depthwise, totals, strict=True)),
            "flop_share": dw_flops / total_flops}


def inference(rounds: int, workdir: Path) -> dict:
    import seglab
    from seglab.export.onnx import export_onnx

    torch.manual_seed(0)
    shared = seglab_model()
    checkpoint = workdir / "x65.ckpt"
    write_checkpoint(shared, checkpoint)
    export = export_onnx(checkpoint, workdir / "x65.onnx")
    onnx_predictor = seglab.load(workdir / "x65.onnx")
    default_predictor = seglab.load(checkpoint, precision="auto")
    fp32_predictor = seglab.load(checkpoint)
    compiled_predictor = seglab.load(checkpoint, precision="auto", compile=True)
    results = {"default_predictor": repr(default_predictor),
               "onnx_parity_max_abs_diff": max(check.max_abs_diff for check in export.checks)}
    smp = smp_model()
    for batch in (1, 8):
        images = torch.rand(batch, 3, 224, 224)
        runners: dict[str, Callable[[], None]] = {}
        for precision, cl in (("fp32", False), ("bf16", False), ("bf16", True)):
            label = f"{precision}{'+CL' if cl else ''}"
            runners[f"smp {label}"] = forward_runner(smp, images, precision, cl)
            runners[f"seglab network {label}"] = forward_runner(shared, images, precision, cl)
        runners["seglab Predictor (default)"] = lambda p=default_predictor, x=images: p.scores(x)
        runners["seglab Predictor fp32"] = lambda p=fp32_predictor, x=images: p.scores(x)
        runners["seglab onnxruntime fp32"] = lambda p=onnx_predictor, x=images: p.scores(x)
        runners["seglab Predictor compiled"] = lambda p=compiled_predictor, x=images: p.scores(x)
        compile_started = time.perf_counter()
        compiled_predictor.scores(images)  # compiles for this batch shape
        results[f"compile_seconds_b{batch}"] = time.perf_counter() - compile_started
        seconds = interleaved_seconds(runners, rounds, warmup=2)
        results[f"b{batch}"] = {name: batch / value for name, value in seconds.items()}
        print(f"inference b{batch}", json.dumps({k: round(v, 2) for k, v in results[f'b{batch}'].items()}),
              flush=True)
    return results


def write_folder(root: Path, size: tuple[int, int], count: int) -> None:
    """`count` random image/mask pairs of `size` in seglab's split-folder layout (train and val)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 4)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for index in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / "images" /
                                                                                  f"{index:03d}.png")
            Image.fromarray(rng.integers(0, 4, size, dtype=np.uint8)).save(root / split / "masks" / f"{index:03d}.png")


def train_config(data: Path, runs: Path, size: tuple[int, int], steps: int) -> dict:
    return {"name": f"speed_{size[0]}x{size[1]}", "runs_dir": str(runs), "dataset": "folder", "data_root": str(data),
            "num_classes": 4, "model": "deeplabv3plus_xception65", "output_stride": 16, "batch_size": 8,
            "image_size": list(size), "max_steps": steps, "val_every_n_epochs": 1000, "progress_bar": False,
            "logger": "csv", "test_after_training": False}


TRAIN_RUN_SCRIPT = """
import json, sys, time, types
# Lightning imports torchvision when it is installed, as it is in the peers' environment: the same stub as smp's.
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
sys.path.insert(0, sys.argv[2])
import lightning.pytorch as pl
from seglab.training import make_config, train
from speed import peak_rss_gb

class StepClock(pl.Callback):
    # Images/s over training steps after the first two (warm-up), data loading between steps included.
    def __init__(self):
        self.marks = []
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.marks.append((time.perf_counter(), len(batch[0])))

clock = StepClock()
result = train(make_config(json.loads(sys.argv[1])), overwrite=True, extra_callbacks=[clock])
(start, _), rest = clock.marks[1], clock.marks[2:]
print(json.dumps({"images_per_second": sum(n for _, n in rest) / (rest[-1][0] - start),
                  "channels_last": bool(result.module.config.channels_last),
                  "precision": str(result.trainer.precision),
                  "peak_rss_gb": peak_rss_gb()}))
"""

SMP_RSS_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
import speed
torch.set_num_threads(2)
model = speed.smp_model()
run = speed.training_runner(model, torch.rand(8, 3, 224, 224), torch.randint(0, 21, (8, 224, 224)), "bf16", True)
for _ in range(4):
    run()
print(json.dumps({"peak_rss_gb": speed.peak_rss_gb()}))
"""


def peak_rss_gb() -> float:
    """This process's peak resident memory in GiB. /proc's VmHWM, not getrusage's ru_maxrss: a child started by
    a large process keeps the parent's ru_maxrss across fork and exec, which made two different children here
    report the same peak."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmHWM"].split()[0]) / 2**20


def run_json(arguments: list[str]) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": "2"}
    completed = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, env=environment,
                               check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{arguments[:2]} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def training(rounds: int, workdir: Path, steps: int) -> dict:
    results: dict = {}
    for size in ((224, 224), (240, 320)):
        images, masks = torch.rand(8, 3, *size), torch.randint(0, CLASSES, (8, *size))
        runners = {}
        for precision, cl in (("fp32", False), ("bf16", False), ("bf16", True)):
            label = f"{precision}{'+CL' if cl else ''}"
            runners[f"smp {label}"] = training_runner(smp_model(), images, masks, precision, cl)
            runners[f"seglab network {label}"] = training_runner(seglab_model(), images, masks, precision, cl)
        seconds = interleaved_seconds(runners, rounds, warmup=1)
        del runners
        key = f"{size[0]}x{size[1]}"
        results[key] = {name: 8 / value for name, value in seconds.items()}
        data = workdir / f"data_{key}"
        write_folder(data, size, 8 * (steps + 1))
        run = run_json(["-c", TRAIN_RUN_SCRIPT, json.dumps(train_config(data, workdir / "runs", size, steps)),
                        str(Path(__file__).parent)])
        results[key]["seglab train (default)"] = run["images_per_second"]
        results[f"{key}_train_run"] = run
        print(f"training {key}", json.dumps({k: round(v, 2) for k, v in results[key].items()}), flush=True)
    return results


def demo_step(rounds: int) -> dict:
    images, masks = torch.rand(16, 3, 64, 64), torch.randint(0, 4, (16, 64, 64))
    runners = {f"seglab X41 bf16{'+CL' if cl else ''}": training_runner(
        build_model("deeplabv3plus_xception41", num_classes=4), images, masks, "bf16", cl) for cl in (False, True)}
    seconds = interleaved_seconds(runners, rounds, warmup=2)
    return {name: 16 / value for name, value in seconds.items()}


def compile_training(rounds: int) -> dict:
    """seglab's bare bf16 + channels_last training step on X65 at 224 px, eager against torch.compile."""
    images, masks = torch.rand(8, 3, 224, 224), torch.randint(0, CLASSES, (8, 224, 224))
    compiled_model = torch.compile(seglab_model().to(memory_format=torch.channels_last))
    runners = {"eager": training_runner(seglab_model(), images, masks, "bf16", True),
               "compiled": training_runner(compiled_model, images, masks, "bf16", True)}
    started = time.perf_counter()
    runners["compiled"]()
    compile_seconds = time.perf_counter() - started
    seconds = interleaved_seconds(runners, rounds, warmup=1)
    return {"compile_seconds": compile_seconds, **{name: 8 / value for name, value in seconds.items()}}


def peak_memory(workdir: Path) -> dict:
    data = workdir / "data_224x224"
    seglab_run = run_json(["-c", TRAIN_RUN_SCRIPT, json.dumps(train_config(data, workdir / "runs", (224, 224), 4)),
                           str(Path(__file__).parent)])
    smp_run = run_json(["-c", SMP_RSS_SCRIPT, str(Path(__file__).parent)])
    return {"seglab train (default) GB": seglab_run["peak_rss_gb"], "smp bf16+CL bare loop GB": smp_run["peak_rss_gb"]}


def precision_of(contender: str) -> str:
    """The number format a contender's name says it runs in (the default/compiled Predictor: auto = bf16 here)."""
    return "fp32" if "fp32" in contender else "bf16"


def ratio_rows(figures: dict[str, float], flops: float, ceiling: dict[str, float]) -> list[str]:
    smp_best = max(value for name, value in figures.items() if name.startswith("smp"))
    smp_fp32 = figures["smp fp32"]
    rows = []
    for name, value in figures.items():
        share = flops * value / 1e9 / ceiling[precision_of(name)]
        rows.append(f"| {name} | {value:.2f} | {value / smp_best:.2f}x | {value / smp_fp32:.2f}x | {share:.0%} |")
    return rows


TABLE_HEAD = "| contender | img/s | vs smp best | vs smp fp32 | share of ceiling |"


def render_markdown(report: dict, gpu: dict | None) -> str:
    ceiling = report["ceiling_gflops"]
    flops = report["flops_per_image"]
    lines = [
        "# Speed: seglab against smp (DeepLabV3+ Xception-65, output stride 16)",
        "",
        f"Written by `.venv-peers/bin/python benchmarks/speed.py` ({report.get('started', '?')}): "
        f"{report['machine']}, {report['threads']} threads, torch {report['torch']}. Rounds interleaved across "
        "contenders, medians after warm-up, images/s. `smp best` is smp's fastest of fp32, bf16 and bf16 + "
        "channels_last (CL) in the same table. Share of ceiling: FLOPs per image x images/s against the best "
        f"large-convolution rate measured in the same run: **{ceiling['fp32']:.0f} GFLOP/s fp32, "
        f"{ceiling['bf16']:.0f} GFLOP/s bf16** (training counted as 3x the forward FLOPs).",
        "",
        f"Note: {report['note']}.",
        "",
        f"FLOPs per image (forward): seglab {flops['seglab X65 224'] / 1e9:.2f} G, smp "
        f"{flops['smp X65 224'] / 1e9:.2f} G at 224x224; seglab {flops['seglab X65 240x320'] / 1e9:.2f} G at "
        "240x320.",
    ]
    inference = report.get("inference")
    if inference:
        lines += ["", "## Inference, 224x224", "",
                  f"The default Predictor is `{inference['default_predictor']}`. torch.compile took "
                  f"{inference.get('compile_seconds_b8', float('nan')):.0f} s (batch 8) and "
                  f"{inference.get('compile_seconds_b1', float('nan')):.0f} s (batch 1) before its first batch. "
                  f"ONNX export parity: max abs probability difference {inference['onnx_parity_max_abs_diff']:.1e}."]
        for batch in ("b1", "b8"):
            lines += ["", f"Batch {batch[1:]}:", "", TABLE_HEAD, "|---|---|---|---|---|",
                      *ratio_rows(inference[batch], flops["seglab X65 224"], ceiling)]
    training = report.get("training")
    if training:
        lines += ["", "## Training, batch 8", "",
                  "Bare loops: `seglab.training.training_step` (cross-entropy, backward, fused AdamW) on each network. "
                  "`seglab train (default)`: a real run with the default config on a folder of images of that size "
                  "(Lightning, data loading included), images/s over its steps after the first two."]
        for size in ("224x224", "240x320"):
            if size not in training:
                continue
            run = training.get(f"{size}_train_run", {})
            size_flops = 3 * flops["seglab X65 224" if size == "224x224" else "seglab X65 240x320"]
            lines += ["", f"{size} (`seglab train` chose {run.get('precision')}, channels_last="
                      f"{run.get('channels_last')}):", "",
                      TABLE_HEAD, "|---|---|---|---|---|", *ratio_rows(training[size], size_flops, ceiling)]
    depthwise = report.get("depthwise")
    if depthwise:
        gain = (1 - depthwise["flop_share"]) / (1 - depthwise["time_share"])
        lines += ["", "## The depthwise convolutions", "",
                  "In seglab's bf16 + channels_last forward pass (X65, 224x224, batch 8) the depthwise convolutions "
                  f"do {depthwise['flop_share']:.1%} of the FLOPs and take {depthwise['time_share']:.1%} of the time. "
                  "Run at the rate of the rest of the network they would make the forward pass "
                  f"{gain:.2f}x faster: that is the part of the remaining gap to the ceiling that they explain."]
    demo = report.get("demo_step")
    if demo:
        lines += ["", "## The demo's step (Xception-41, 64 px, batch 16, bf16)", "",
                  "| memory format | img/s |", "|---|---|",
                  *[f"| {name} | {value:.1f} |" for name, value in demo.items()]]
    compiled = report.get("compile_training")
    if compiled:
        lines += ["", "## torch.compile for training (X65, 224 px, batch 8, bf16 + channels_last)", "",
                  f"Compiling took {compiled['compile_seconds']:.0f} s; then {compiled['compiled']:.2f} images/s "
                  f"against {compiled['eager']:.2f} eager ({compiled['compiled'] / compiled['eager']:.2f}x)."]
    rss = report.get("peak_rss")
    if rss:
        lines += ["", "## Peak RSS, training X65 @224, batch 8", "",
                  *[f"- {name}: {value:.2f}" for name, value in rss.items()]]
    if gpu:
        lines += ["", f"## GPU: {gpu['device']} (torch {gpu['torch']}), batch {gpu['batch']} at {gpu['size']}x"
                  f"{gpu['size']}, {gpu['precision']}", "",
                  "Written by `python benchmarks/gpu_speed.py --out ...` on the lent GPU machine "
                  "([gpu_speed.json](gpu_speed.json)); same bare loop for both models.", "",
                  "| task | smp img/s | seglab img/s | seglab / smp |", "|---|---|---|---|"]
        for task, figures in gpu["results"].items():
            for name, value in figures.items():
                if name != "smp":
                    smp = figures["smp"]
                    lines.append(f"| {task} ({name}) | {smp:.1f} | {value:.1f} | {value / smp:.2f}x |")
        if "note" in gpu:
            lines += ["", f"Note: {gpu['note']}."]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict) -> Path:
    gpu_file = RESULTS / "gpu_speed.json"
    gpu = json.loads(gpu_file.read_text()) if gpu_file.exists() else None
    path = RESULTS / "speed.md"
    path.write_text(render_markdown(report, gpu))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=12, help="steps of each `seglab train` run")
    parser.add_argument("--only", nargs="*", default=None,
                        choices=("ceiling", "inference", "training", "demo", "memory", "compile_training"))
    parser.add_argument("--out", default=str(RESULTS / "speed.json"))
    parser.add_argument("--render", action="store_true", help="only rewrite speed.md from the JSON results")
    args = parser.parse_args()
    if args.render:
        print(write_markdown(json.loads(Path(args.out).read_text())))
        return
    torch.set_num_threads(2)
    # compile_training spends minutes compiling: only on request.
    sections = args.only or ["ceiling", "inference", "training", "demo", "memory"]
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "note": STUB_NOTE,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(STUB_NOTE, flush=True)
    out = Path(args.out)
    if out.exists():
        report = {**json.loads(out.read_text()), **report}

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        if "ceiling" in sections:
            report["ceiling_gflops"] = conv_ceiling(args.rounds)
            report["flops_per_image"] = {"seglab X65 224": forward_flops(seglab_model(), (224, 224)),
                                         "smp X65 224": forward_flops(smp_model(), (224, 224)),
                                         "seglab X65 240x320": forward_flops(seglab_model(), (240, 320))}
            report["depthwise"] = depthwise_share(seglab_model(), torch.rand(8, 3, 224, 224), args.rounds)
            print("ceiling", report["ceiling_gflops"], report["depthwise"], flush=True)
            save()
        if "inference" in sections:
            report["inference"] = inference(args.rounds, workdir)
            save()
        if "training" in sections:
            report["training"] = training(args.rounds, workdir, args.train_steps)
            save()
        if "demo" in sections:
            report["demo_step"] = demo_step(args.rounds)
            print("demo step", report["demo_step"], flush=True)
            save()
        if "compile_training" in sections:
            report["compile_training"] = compile_training(args.rounds)
            print("compile training", report["compile_training"], flush=True)
            save()
        if "memory" in sections:
            if not (workdir / "data_224x224").exists():
                write_folder(workdir / "data_224x224", (224, 224), 40)
            report["peak_rss"] = peak_memory(workdir)
            print("peak rss", report["peak_rss"], flush=True)
            save()
    report["peak_rss_this_process_gb"] = peak_rss_gb()
    save()
    if out == RESULTS / "speed.json":
        write_markdown(report)


if __name__ == "__main__":
    main()
