"""What the benchmark scripts share: the one results writer, interleaved timing, the settings column, and the
models they compare (smp behind its torchvision stub, seglab's, a minimal seglab checkpoint).

The scripts import it as `common` (run as `python benchmarks/X.py`, which puts this folder first on sys.path);
they never import each other. Training and prediction come from seglab itself: `seglab.training.training_step`,
`seglab.training.train`, `seglab.inference.Predictor` and `seglab.evaluation.loop.evaluate`.
"""

from __future__ import annotations

import copy
import csv
import fcntl
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def append_rows(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Append `rows` to `path`: a `.jsonl` file takes one JSON object per row; a `.csv` file gets the header
    `columns` (default: the first row's keys) when it is new or empty, and must already have exactly that header
    otherwise, so that no row is written under another file's headings.

    One locked write per call: screening processes running side by side can append to the same file.
    """
    path = Path(path)
    rows = [dict(row) for row in rows]
    if not rows:
        return
    buffer = io.StringIO()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", newline="", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        if path.suffix == ".jsonl":
            buffer.writelines(json.dumps(row) + "\n" for row in rows)
        elif path.suffix == ".csv":
            names = list(columns or rows[0])
            file.seek(0)
            header = next(csv.reader(file), None)
            writer = csv.DictWriter(buffer, fieldnames=names)
            if header is None:
                writer.writeheader()
            elif header != names:
                raise ValueError(f"{path} has the columns {header}, not {names}: write to a new file, or add the "
                                 "new columns to every row of this one first")
            writer.writerows(rows)
        else:
            raise ValueError(f"append_rows writes .csv or .jsonl files, not {path.name}")
        file.seek(0, io.SEEK_END)
        file.write(buffer.getvalue())


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows `append_rows` wrote: a `.jsonl` file's objects, or a results CSV's rows as strings."""
    with open(path, newline="", encoding="utf-8") as file:
        if Path(path).suffix == ".jsonl":
            return [json.loads(line) for line in file if line.strip()]
        return list(csv.DictReader(file))


def interleaved_seconds(runners: Mapping[str, Callable[[], None]], repeats: int,
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


def recipe_settings(config: Any, changed: Mapping[str, Any]) -> str:
    """The settings column of the accuracy benchmarks: the recipe's main choices and the changes made to it."""
    from seglab.training.hardware import lightning_precision

    return (f"{config.model} os{config.output_stride} bs{config.batch_size} {lightning_precision(config)} "
            f"{config.optimizer} lr{config.lr:g} {config.scheduler} resize={config.progressive_resize} "
            f"train_length={config.data.train_length} changes={dict(changed) or 'none'}")


def cpu_name() -> str:
    """The CPU as lscpu names it, with its family/model numbers (a VM's "AMD EPYC" alone does not say which
    generation) and whether it has AVX-512 VNNI (int8 dot products), and the core count."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in listing.splitlines())}
    vnni = "AVX-512 VNNI" if "avx512_vnni" in fields.get("Flags", "").split() else "no AVX-512 VNNI"
    return (f"{fields.get('Model name', '?')} (family {fields.get('CPU family', '?')}, model "
            f"{fields.get('Model', '?')}, {vnni}), {os.cpu_count()} cores")


# The models the speed benchmarks compare: 21 classes (Pascal VOC's count), output stride 16.
CLASSES = 21
STUB_NOTE = ("smp imported with `torchvision._meta_registrations` replaced by an empty module (torchvision's "
             "compiled operators do not load beside the CPU-only torch; smp's code paths used here do not need them)")


def import_smp() -> types.ModuleType:
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import segmentation_models_pytorch as smp

    return smp


def smp_model(encoder: str = "tu-xception65") -> torch.nn.Module:
    return import_smp().DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=CLASSES)


def seglab_model(name: str = "deeplabv3plus_xception65") -> torch.nn.Module:
    from seglab.models import build_model

    return build_model(name, num_classes=CLASSES, output_stride=16)


def forward_runner(model: torch.nn.Module, images: torch.Tensor, precision: str,
                   channels_last: bool) -> Callable[[], None]:
    model = model.eval()
    if channels_last:  # a copy: `Module.to` converts in place, and the NCHW contender shares the model
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model(images)

    return run


def write_checkpoint(model: torch.nn.Module, path: Path, name: str = "deeplabv3plus_xception65") -> None:
    """A minimal seglab checkpoint (weights + InferenceSpec) of the network `name` for the export, as training
    writes them."""
    from seglab.data.classes import default_palette
    from seglab.inference.loading import MODEL_PREFIX
    from seglab.inference.spec import SPEC_KEY, InferenceSpec

    spec = InferenceSpec(model=name, model_options={"output_stride": 16}, num_classes=CLASSES,
                         class_names=tuple(f"class{i}" for i in range(CLASSES)), palette=default_palette(CLASSES),
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    state = {MODEL_PREFIX + key: value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, SPEC_KEY: spec.to_dict()}, path)
