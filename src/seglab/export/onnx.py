"""ONNX export of a trained model (`export_onnx`), checked against PyTorch before the file is written.

The exported graph is the network only: normalised images `(N, 3, H, W)` in, logits `(N, C, H, W)` out, with
batch, height and width dynamic; the `InferenceSpec` goes into its metadata (`seglab.inference.onnx_runtime`
reads it back).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from seglab.atomic import temporary_name
from seglab.errors import ConfigError, ExportError, OutputError, describe_os_error
from seglab.inference.loading import (
    build_trained_model,
    checkpoint_path,
    model_state,
    read_checkpoint,
    spec_from_checkpoint,
)
from seglab.inference.onnx_runtime import EXTRA_MODULES, OnnxRuntimeModel, import_extra, spec_metadata
from seglab.inference.predictor import prepare_inputs
from seglab.inference.spec import InferenceSpec

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
        batch = 2 if index == 0 else 1
        images = torch.rand(batch, 3, height, width, generator=generator)
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
        checks.append(ParityCheck((batch, 3, height, width), float((actual - expected).abs().max())))
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
    if program is None:  # only the TorchScript exporter (dynamo=False) returns nothing
        raise ExportError("torch.onnx.export returned no ONNX program")
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
    temporary = temporary_name(out_path, ".part")
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

