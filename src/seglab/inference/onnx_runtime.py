"""The ONNX Runtime engine: predicts with a file written by `seglab export` alone.

The graph is the network only (normalised images in, logits out), so resizing, normalisation, tiling and
test-time augmentation stay `Predictor`'s own code for both engines. The `InferenceSpec` travels in the file's
`metadata_props`, one JSON value per field under `seglab.<field>`; reading it back parses JSON and runs nothing
from the file.

onnx, onnxruntime and onnxscript are the optional `seglab[onnx]` extra: imported inside the functions that use
them, and nowhere else in seglab.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from seglab.errors import ConfigError, WeightsError
from seglab.inference.device import resolve_device
from seglab.inference.predictor import Predictor, threads_per_call
from seglab.inference.spec import InferenceSpec

METADATA_PREFIX = "seglab."
# Version of the metadata layout (one JSON entry per spec field); the spec's own version has its entry too.
FORMAT_VERSION = 1
FORMAT_KEY = METADATA_PREFIX + "format_version"
SPEC_VERSION_KEY = METADATA_PREFIX + "spec_version"
SPEC_FIELDS = tuple(field.name for field in dataclasses.fields(InferenceSpec))

EXTRA_MODULES = ("onnx", "onnxscript", "onnxruntime")


def import_extra(name: str) -> ModuleType:
    """One of the `seglab[onnx]` modules, or a clear error naming it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ConfigError(f"ONNX export/engine needs the onnx extra: pip install 'seglab[onnx]' ({name} is missing: "
                          f"{error})") from None



def spec_metadata(spec: InferenceSpec) -> dict[str, str]:
    """The `metadata_props` entries that carry `spec`: `seglab.<field>` -> JSON, plus the two version keys."""
    values = spec.to_dict()
    entries = {SPEC_VERSION_KEY: json.dumps(values.pop("version")), FORMAT_KEY: json.dumps(FORMAT_VERSION)}
    entries.update({METADATA_PREFIX + name: json.dumps(value) for name, value in values.items()})
    return entries


def spec_from_metadata(entries: Mapping[str, str], path: str | Path) -> InferenceSpec:
    """The `InferenceSpec` in an exported file's metadata (`spec_metadata`), as JSON only."""

    def entry(key: str) -> Any:
        if key not in entries:
            raise WeightsError(f"{path}: ONNX metadata entry {key!r} is missing. The file was not written by "
                               "`seglab export` or was edited since: export it again")
        try:
            return json.loads(entries[key])
        except ValueError as error:
            raise WeightsError(f"{path}: ONNX metadata entry {key!r} is not valid JSON ({error}): "
                               f"{entries[key][:80]!r}. Export the file again") from None

    if FORMAT_KEY not in entries:
        raise WeightsError(f"{path} is not a seglab ONNX export: its metadata has no {FORMAT_KEY!r} entry. Export "
                           "a seglab checkpoint with `seglab export CHECKPOINT --format onnx --out FILE`")
    version = entry(FORMAT_KEY)
    if not isinstance(version, int) or version < 1:
        raise WeightsError(f"{path}: ONNX metadata entry {FORMAT_KEY!r} should be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise WeightsError(f"{path} was exported in seglab ONNX format {version}; this seglab reads up to "
                           f"{FORMAT_VERSION}: upgrade seglab")
    values = {name: entry(METADATA_PREFIX + name) for name in SPEC_FIELDS}
    try:
        return InferenceSpec.from_dict({"version": entry(SPEC_VERSION_KEY), **values})
    except WeightsError as error:
        raise WeightsError(f"{path}: the seglab.* ONNX metadata entries do not make an inference spec: {error}. "
                           "Export the file again") from None



class OnnxRuntimeModel(nn.Module):
    """An exported graph run by ONNX Runtime on the CPU, called like the network: float `(N, 3, H, W)` in,
    logits out as a torch tensor. An `nn.Module` without parameters, so that `Predictor` moves and switches it
    like a network (no-ops here)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        super().__init__()
        ort = import_extra("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"ONNX file {self.path} does not exist")
        options = ort.SessionOptions()
        # As many threads as torch would use, so the two engines compare on equal terms.
        self.threads = threads or torch.get_num_threads()
        options.intra_op_num_threads = self.threads
        # Idle pool threads sleep instead of spinning: Predictor's torch work (resizing, tiles, TTA, argmax) runs
        # between the session's calls in this process, and spinning threads hold the cores it needs. Beside
        # other runtimes, INT8 at batch 1 ran at 0.55x its alone speed spinning and 0.93x not; alone, spinning
        # gained 6 % (benchmarks/results/int8_variants.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for invalid or damaged files
            raise WeightsError(f"cannot load ONNX file {self.path} into ONNX Runtime: {error}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise WeightsError(f"{self.path}: a seglab export has one input and one output; this graph has "
                               f"{len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # ONNX Runtime reads plain NCHW float32: channels-last memory or another dtype is converted here.
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(logits)


class OnnxRuntimePredictor(Predictor):
    """A `Predictor` whose network is an exported ONNX file run by ONNX Runtime: on the CPU, in float32.

    Everything around the network (resize, normalisation, tiling, TTA) is `Predictor`'s own code.
    """

    engine = "onnxruntime"

    def __init__(self, model: OnnxRuntimeModel, spec: InferenceSpec, *, device: str | torch.device | None = None,
                 precision: str = "fp32", batch_size: int = 8, tile_batch: int | None = None,
                 concurrent_calls: int = 1) -> None:
        if device is not None and resolve_device(device).type != "cpu":
            raise ConfigError(f"the onnxruntime engine runs on the CPU, not {device}; use the pytorch engine (a "
                              ".ckpt checkpoint) for a GPU")
        if precision not in ("fp32", "auto"):
            raise ConfigError(f"the onnxruntime engine runs in fp32, not {precision}; use precision fp32 or auto, "
                              "or the pytorch engine")
        # ONNX Runtime reads contiguous NCHW float32 (`OnnxRuntimeModel.forward`).
        # One session serves concurrent runs, each on the calling thread plus its own intra-op threads.
        super().__init__(model, spec, device="cpu", precision="fp32", batch_size=batch_size, tile_batch=tile_batch,
                         channels_last=False, concurrent_calls=concurrent_calls)

    def network(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # the exported graph is already what it runs: folded by ONNX Runtime, never compiled by torch


def load_onnx(path: str | Path, *, concurrent_calls: int = 1, **options: Any) -> OnnxRuntimePredictor:
    """An `OnnxRuntimePredictor` for an exported file; `options` go to it (as for `Predictor`).

    `concurrent_calls`: how many calls share the cores, the session running each on `cores // concurrent_calls`
    threads (`predictor.calls_for_folder`)."""
    model = OnnxRuntimeModel(path, threads=threads_per_call(concurrent_calls))
    return OnnxRuntimePredictor(model, spec_from_metadata(model.metadata(), path), concurrent_calls=concurrent_calls,
                                **options)
