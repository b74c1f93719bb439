"""The one harness of the maintained benchmarks: how they name the machine, time contenders, reach the peers, keep
their results and render them. A benchmark is a caller of seglab's public API (the names its packages export;
tests/unit/core/test_benchmarks_api.py keeps it so) plus this module: `machine()` and `run_stamp()` stamp every row,
`interleaved_seconds()` times contenders, `append_rows()`/`read_rows()` keep results/NAME.jsonl, `write_report()`
writes results/NAME.md (the one renderer, a table per `Section`), `import_smp()`/`smp_model()` reach the peer behind
its torchvision stub (`STUB_NOTE`; `PEER_PYTHON` is the interpreter that `bash benchmarks/peers.sh` builds), and
`seglab_predictors()`, `smp_forward_runners()` and `peer_step_runner()` (smp's bare training step: seglab itself
trains only through `seglab.training.train`) are the contenders the speed benchmarks compare.

Run a benchmark as `python benchmarks/NAME.py`, which puts this folder first on sys.path.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

import seglab
from seglab.atomic import write_atomically, write_text_atomically
from seglab.export import export_onnx
from seglab.inference import InferenceSpec
from seglab.models import build_model

# BENCHMARK_RESULTS points a smoke run elsewhere, so that it leaves the recorded results alone.
RESULTS = Path(os.environ.get("BENCHMARK_RESULTS") or Path(__file__).resolve().parent / "results")
PEER_PYTHON = Path(__file__).resolve().parent.parent / ".venv-peers" / "bin" / "python"
CLASSES = 21  # the speed benchmarks' class count (Pascal VOC's)
SMP_FORMS = (("fp32", False), ("bf16", False), ("bf16", True))  # (precision, channels_last) of smp's contenders
STUB_NOTE = ("smp imported with `torchvision._meta_registrations` replaced by an empty module (torchvision's "
             "compiled operators do not load beside the CPU-only torch; smp's code paths used here do not need them)")


def cpu_name() -> str:
    """The CPU as lscpu names it, with its family/model numbers (a VM's "AMD EPYC" alone does not say which
    generation), whether it has AVX-512 VNNI (int8 dot products), and the core count."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"unknown CPU, {os.cpu_count()} cores"
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in listing.splitlines())}
    vnni = "AVX-512 VNNI" if "avx512_vnni" in fields.get("Flags", "").split() else "no AVX-512 VNNI"
    return (f"{fields.get('Model name', '?')} (family {fields.get('CPU family', '?')}, model "
            f"{fields.get('Model', '?')}, {vnni}), {os.cpu_count()} cores")


def machine() -> dict[str, Any]:
    """What every result row carries about where and when it was measured."""
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_average": round(os.getloadavg()[0], 2)}


def run_stamp() -> dict[str, Any]:
    """What every row of one run carries: the run's id (its start) and `machine()`."""
    return {"run": time.strftime("%Y-%m-%dT%H:%M:%S"), **machine()}


def interleaved_seconds(runners: Mapping[str, Callable[[], object]], repeats: int,
                        warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each runner, after `warmup` calls each, the runners alternating in every
    round so that drifting machine load affects them alike."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_gb() -> float:
    """This process's peak resident memory in GiB: /proc's VmHWM, not getrusage's ru_maxrss, which a child keeps
    from a large parent across fork and exec."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmHWM"].split()[0]) / 2**20


# Results: one .jsonl log per benchmark, and one renderer.

def results_path(name: str, suffix: str = ".jsonl") -> Path:
    return RESULTS / f"{name}{suffix}"


def append_rows(name: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append `rows` to results/NAME.jsonl in one locked write: runs side by side can share a log (an atomic
    replace of the whole file, seglab's rule for written files, would drop the rows of the other writer)."""
    text = "".join(json.dumps(dict(row)) + "\n" for row in rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(results_path(name), "a", encoding="utf-8") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(text)


def read_rows(name: str) -> list[dict[str, Any]]:
    """The rows of results/NAME.jsonl, oldest first."""
    with open(results_path(name), encoding="utf-8") as log:
        return [json.loads(line) for line in log if line.strip()]


def latest_run(name: str) -> list[dict[str, Any]]:
    """The rows of results/NAME.jsonl written by its newest run."""
    rows = read_rows(name)
    return [row for row in rows if row["run"] == rows[-1]["run"]]


def written_by(command: str, row: Mapping[str, Any]) -> str:
    """The start of a report's intro: the command, and the machine stamp (`machine()`) of the run's first row."""
    return (f"Written by `{command}` ({row['date']}): {row['cpu']}, {row['threads']} threads, torch {row['torch']}, "
            f"load average {row['load_average']} at the start.")


class Section(NamedTuple):
    """One part of a report: a heading, a paragraph, and a table of `rows` in `columns` (default: every key of
    the rows, in the order first seen). Floats print with 2 decimals unless a column's name ends in '%'."""

    heading: str
    text: str = ""
    rows: Sequence[Mapping[str, Any]] = ()
    columns: Sequence[str] | None = None


def cell(value: Any, column: str) -> str:
    if isinstance(value, float):
        return f"{100 * value:.1f}" if column.endswith("%") else f"{value:.2f}"
    return "" if value is None else str(value).replace("|", "\\|")


def render(title: str, intro: str, sections: Iterable[Section]) -> str:
    """The Markdown text of a report."""
    lines = [f"# {title}", "", intro]
    for section in sections:
        lines += ["", f"## {section.heading}", ""] + ([section.text, ""] if section.text else [])
        columns = list(section.columns or dict.fromkeys(key for row in section.rows for key in row))
        if section.rows:
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(cell(row.get(column), column) for column in columns) + " |"
                      for row in section.rows]
    return "\n".join(lines) + "\n"


def write_report(name: str, title: str, intro: str, sections: Iterable[Section]) -> Path:
    """Write results/NAME.md (atomically) and return its path."""
    return write_text_atomically(results_path(name, ".md"), render(title, intro, sections))


# The peers, and the models the speed benchmarks compare.

def import_smp() -> types.ModuleType:
    """segmentation_models_pytorch, importable only in the peers' environment (`bash benchmarks/peers.sh`)."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    try:
        import segmentation_models_pytorch as smp
    except ImportError as error:
        raise SystemExit(f"smp is not installed here ({error}): run `bash benchmarks/peers.sh`, then this "
                         f"benchmark with {PEER_PYTHON}") from error
    return smp


def smp_model(encoder: str = "tu-xception65", classes: int = CLASSES) -> torch.nn.Module:
    return import_smp().DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=classes)


def seglab_model(name: str = "deeplabv3plus_xception65") -> torch.nn.Module:
    return build_model(name, num_classes=CLASSES, output_stride=16)


def forward_runner(model: torch.nn.Module, images: torch.Tensor, precision: str,
                   channels_last: bool) -> Callable[[], None]:
    """A bare forward pass under inference mode, in fp32 or bf16 autocast, NCHW or channels_last."""
    model = model.eval()
    if channels_last:  # a copy: `Module.to` converts in place, and the NCHW contender shares the model
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model(images)

    return run


def smp_label(precision: str, channels_last: bool) -> str:
    return f"smp {precision}{'+CL' if channels_last else ''}"


def smp_forward_runners(model: torch.nn.Module, images: torch.Tensor) -> dict[str, Callable[[], None]]:
    """smp's bare forward pass in each of `SMP_FORMS`, by label ("smp fp32", "smp bf16", "smp bf16+CL")."""
    return {smp_label(precision, cl): forward_runner(model, images, precision, cl) for precision, cl in SMP_FORMS}


def peer_step_runner(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, precision: str,
                     channels_last: bool) -> Callable[[], None]:
    """The peer's training step as smp's examples write it: cross-entropy, backward, fused AdamW."""
    model = model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(model(images).float(), masks)
        loss.backward()
        optimizer.step()

    return run


def write_checkpoint(model: torch.nn.Module, path: Path, name: str = "deeplabv3plus_xception65") -> Path:
    """The network `name` with `model`'s weights as a seglab checkpoint file (the format `seglab.load` reads:
    the weights under "state_dict" with the "model." prefix, the `InferenceSpec` under "inference_spec"), for
    exports of random-weight networks. Native working size: the input's size is what is timed."""
    spec = InferenceSpec(model=name, model_options={"output_stride": 16}, num_classes=CLASSES,
                         class_names=tuple(f"class{i}" for i in range(CLASSES)),
                         palette=tuple((37 * i % 256, 91 * i % 256, 173 * i % 256) for i in range(CLASSES)),
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    weights = {f"model.{key}": value for key, value in model.state_dict().items()}
    return write_atomically(path, lambda target: torch.save({"state_dict": weights,
                                                           "inference_spec": spec.to_dict()}, target))


def seglab_predictors(workdir: Path, name: str = "deeplabv3plus_xception65") -> tuple[Path, dict[str, Any]]:
    """A random-weight `name` written as a checkpoint in `workdir`, and seglab's float engines on it by label:
    `seglab.load` with precision auto and fp32, and the fp32 ONNX export (`export_onnx`) on ONNX Runtime."""
    torch.manual_seed(0)
    checkpoint = write_checkpoint(seglab_model(name), workdir / f"{name}.ckpt", name)
    onnx_file = export_onnx(checkpoint, workdir / f"{name}.onnx").path
    return checkpoint, {"seglab Predictor (auto)": seglab.load(checkpoint, precision="auto"),
                        "seglab Predictor fp32": seglab.load(checkpoint),
                        "seglab onnxruntime fp32": seglab.load(onnx_file)}


def scores_runners(predictors: Mapping[str, Any], images: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Each predictor's `scores` (normalisation included) on `images`, by label."""
    return {label: (lambda predictor=predictor: predictor.scores(images)) for label, predictor in predictors.items()}
