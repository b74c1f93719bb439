"""ONNX export of a trained model (`export_onnx`), and the ONNX Runtime engine that predicts with the file alone.

The exported graph is the network only: normalised images `(N, 3, H, W)` in, logits `(N, C, H, W)` out, with
batch, height and width dynamic. That is what `predict_logits` hands the model, so resizing, normalisation,
tiling and test-time augmentation stay in Python and are the same code for both engines. The `InferenceSpec`
travels in the file's `metadata_props`, one JSON value per field under `seglab.<field>`; reading it back parses
JSON and runs nothing from the file.

onnx, onnxruntime and onnxscript (which `torch.onnx.export` needs) are the optional `seglab[onnx]` extra: they
are imported here, inside the functions that use them, and nowhere else in seglab.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import torch
from torch import nn

from seglab.errors import ConfigError, ExportError, OutputError, WeightsError, describe_os_error
from seglab.inference.device import resolve_device
from seglab.inference.loading import (
    build_trained_model,
    checkpoint_path,
    model_state,
    read_checkpoint,
    spec_from_checkpoint,
)
from seglab.inference.predictor import Predictor, prepare_inputs
from seglab.inference.spec import InferenceSpec

METADATA_PREFIX = "seglab."
# Version of the metadata layout (one JSON entry per spec field); the spec's own version has its entry too.
FORMAT_VERSION = 1
FORMAT_KEY = METADATA_PREFIX + "format_version"
SPEC_VERSION_KEY = METADATA_PREFIX + "spec_version"
SPEC_FIELDS = tuple(field.name for field in dataclasses.fields(InferenceSpec))

INPUT_NAME, OUTPUT_NAME = "images", "logits"
PARITY_TOLERANCE = 1e-3
# (H, W) of the parity check's random images: different heights and widths, neither square nor the export
# example's size; the first at batch 2. 128 x 96 is a multiple of every stride here, 299 x 331 of none, and
# its stride-16 map (19 x 21) is wider than ASPP's largest rate (18), so every tap of the atrous branches counts.
CHECK_SIZES = ((128, 96), (299, 331))
# The example the graph is traced with: odd sizes, so that FCN's "pad to a multiple of 32" is traced as the
# general pad (a zero pad where the size is already a multiple) rather than skipped; batch 2 so the batch
# dimension is not specialised to 1.
EXAMPLE_SHAPE = (2, 3, 65, 49)

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
        options.intra_op_num_threads = threads or torch.get_num_threads()
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
                 precision: str = "fp32", batch_size: int = 8, tile_batch: int | None = None) -> None:
        if device is not None and resolve_device(device).type != "cpu":
            raise ConfigError(f"the onnxruntime engine runs on the CPU, not {device}; use the pytorch engine (a "
                              ".ckpt checkpoint) for a GPU")
        if precision not in ("fp32", "auto"):
            raise ConfigError(f"the onnxruntime engine runs in fp32, not {precision}; use precision fp32 or auto, "
                              "or the pytorch engine")
        # ONNX Runtime reads contiguous NCHW float32 (`OnnxRuntimeModel.forward`).
        super().__init__(model, spec, device="cpu", precision="fp32", batch_size=batch_size, tile_batch=tile_batch,
                         channels_last=False)

    def network(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # the exported graph is already what it runs: folded by ONNX Runtime, never compiled by torch


def load_onnx(path: str | Path, **options: Any) -> OnnxRuntimePredictor:
    """An `OnnxRuntimePredictor` for an exported file; `options` go to it (as for `Predictor`)."""
    model = OnnxRuntimeModel(path)
    return OnnxRuntimePredictor(model, spec_from_metadata(model.metadata(), path), **options)



class ParityCheck(NamedTuple):
    shape: tuple[int, int, int, int]
    max_abs_diff: float  # between the fp32 PyTorch and ONNX Runtime softmax probabilities


@dataclasses.dataclass(frozen=True)
class ExportReport:
    path: Path
    opset: int
    checks: tuple[ParityCheck, ...]
    seconds: float

    @property
    def max_abs_diff(self) -> float:
        return max(check.max_abs_diff for check in self.checks)

    def lines(self) -> list[str]:
        shapes = ", ".join(f"{'x'.join(map(str, check.shape))}: {check.max_abs_diff:.2e}" for check in self.checks)
        return [f"parity (max abs difference of probabilities, PyTorch fp32 vs ONNX Runtime, random inputs): {shapes} "
                f"(limit {PARITY_TOLERANCE:g})",
                f"wrote {self.path} (ONNX opset {self.opset}, dynamic batch/height/width) in {self.seconds:.1f} s"]


def check_sizes_of(sizes: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    try:
        checked = tuple((int(h), int(w)) for h, w in sizes)
    except (TypeError, ValueError):
        checked = ()
    if not checked or any(min(size) < 1 for size in checked):
        raise ConfigError(f"check_sizes must be (height, width) pairs of positive integers, got {sizes!r}")
    return checked


def parity_checks(model: nn.Module, runtime: OnnxRuntimeModel, spec: InferenceSpec,
                  sizes: Sequence[tuple[int, int]]) -> tuple[ParityCheck, ...]:
    """Max abs difference between `model`'s and `runtime`'s probabilities on random images of each size (the
    first at batch 2), normalised as prediction normalises them."""
    generator = torch.Generator().manual_seed(0)
    checks = []
    for index, (height, width) in enumerate(sizes):
        images = torch.rand(2 if index == 0 else 1, 3, height, width, generator=generator)
        inputs = prepare_inputs(images, spec).contiguous()
        with torch.inference_mode():
            expected = model(inputs).float().softmax(dim=1)
        try:
            actual = runtime(inputs).softmax(dim=1)
        except Exception as error:  # an onnxruntime failure: a graph that cannot run at this size
            raise ExportError(f"the exported graph fails on a {tuple(inputs.shape)} input in ONNX Runtime: "
                              f"{str(error).strip().splitlines()[0][:300]}") from None
        if actual.shape != expected.shape:
            raise ExportError(f"the exported graph returns {tuple(actual.shape)} for a {tuple(inputs.shape)} input; "
                              f"PyTorch returns {tuple(expected.shape)}")
        checks.append(ParityCheck(tuple(inputs.shape), float((actual - expected).abs().max())))
    return tuple(checks)


def export_graph(model: nn.Module, opset: int | None) -> Any:
    """`model` as an ONNX `ModelProto` with dynamic batch, height and width.

    Exporter: torch.export ("dynamo"), the one torch maintains (the TorchScript exporter is deprecated since
    torch 2.9 and warns). Measured on deeplabv3plus_xception41 (2-core CPU, 1 thread, torch 2.13): it exports
    dynamic batch, height and width, and the graph matches PyTorch to 6e-8 in probability from 1 x 1 to
    160 x 224 pixels and at batch 3, in about 9 s (the TorchScript exporter: 1.3 s, same accuracy). Both
    exporters freeze Python branches on shapes to the example's: hence `DepthwiseConv2d`'s plain route
    while exporting, and `EXAMPLE_SHAPE`.
    """
    import_extra("onnxscript")
    example = torch.rand(EXAMPLE_SHAPE, generator=torch.Generator().manual_seed(0))
    # torch.export logs every torchvision operator it cannot register (none is used here) and warns about its
    # own internals: noise for someone exporting a model.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: "batch", 2: "height", 3: "width"},), verbose=False)
    except Exception as error:  # the exporter raises many types, e.g. for an opset it cannot convert to
        raise ExportError(f"torch.onnx.export failed (opset {opset or 'default'}): "
                          f"{str(error).strip().splitlines()[0][:300]}") from error
    finally:
        registration_log.setLevel(level)
    proto = program.model_proto
    # Below the opsets it implements (18 in torch 2.13), torch converts the graph down and, when that fails,
    # keeps its own opset with only a logged warning (measured: 17 and 9 both came back as 18).
    if opset is not None and graph_opset(proto) != opset:
        raise ExportError(f"torch could not export this model at ONNX opset {opset} (it gave opset "
                          f"{graph_opset(proto)}); leave --opset out or choose {graph_opset(proto)} or higher")
    return proto


def graph_opset(proto: Any) -> int:
    """The default-domain opset of an ONNX `ModelProto`."""
    return next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


def export_onnx(checkpoint: str | Path, out_path: str | Path, *, opset: int | None = None,
                check_sizes: Sequence[Sequence[int]] = CHECK_SIZES) -> ExportReport:
    """Export a checkpoint (or a run folder's best checkpoint) to a single ONNX file at `out_path`.

    The file holds the network (normalised `images (N, 3, H, W)` -> `logits (N, C, H, W)`, all of N, H, W
    dynamic) and the `InferenceSpec` as `seglab.*` metadata, so `seglab.load(out_path)` predicts with it alone.
    Before the file appears, ONNX Runtime's probabilities on random images of `check_sizes` must match PyTorch
    fp32 within 1e-3, else `ExportError` and nothing is written. `opset`: torch's default when None.
    """
    for name in EXTRA_MODULES:
        import_extra(name)
    import onnx

    started = time.perf_counter()
    sizes = check_sizes_of(check_sizes)
    path = checkpoint_path(checkpoint)
    saved = read_checkpoint(path)
    spec = spec_from_checkpoint(saved, path)
    model = build_trained_model(spec, model_state(saved, path), path).float().cpu().eval()
    proto = export_graph(model, opset)
    onnx.helper.set_model_props(proto, spec_metadata(spec))

    out_path = Path(out_path)
    # Written beside the target and renamed only once it passes: a failed export leaves no file behind.
    temporary = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}.part")
    try:
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            onnx.save_model(proto, str(temporary))
        except OSError as error:
            raise OutputError(f"cannot write {out_path}: {describe_os_error(error)}") from None
        checks = parity_checks(model, OnnxRuntimeModel(temporary), spec, sizes)
        failed = [check for check in checks if not check.max_abs_diff <= PARITY_TOLERANCE]  # NaN fails too
        if failed:
            worst = max(failed, key=lambda check: math.inf if math.isnan(check.max_abs_diff) else check.max_abs_diff)
            raise ExportError(f"the ONNX export of {path} does not reproduce the model: ONNX Runtime's probabilities "
                              f"differ from PyTorch fp32 by up to {worst.max_abs_diff:.3g} on a {worst.shape} input "
                              f"(limit {PARITY_TOLERANCE:g}); no file was written")
        os.replace(temporary, out_path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return ExportReport(out_path, graph_opset(proto), checks, time.perf_counter() - started)

