"""INT8 ONNX export (`export_int8`): the float export, statically quantised by ONNX Runtime and checked against
it before anything is written.

The float graph comes from `export_onnx` (with its own parity check against PyTorch). ONNX Runtime's
`quantize_static` then stores QuantizeLinear/DequantizeLinear pairs (QDQ) around every quantisable operator:
weights int8 per output channel, activations uint8 with ranges calibrated on images that are read, resized and
normalised by the predictor's own code (`image_tensor`, `predict_logits`). ONNX Runtime's CPU provider fuses
the pairs into integer kernels when it loads the file. The file keeps the float export's metadata (the
`InferenceSpec`), so `seglab.load` runs it like any export, and adds the quantisation settings and the check's
figures.

`seglab.evaluation` is imported inside the functions that score: `seglab export --help` reads this module's
defaults, and should not wait for torchmetrics.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from seglab.data.options import FolderOptions
from seglab.errors import ConfigError, ExportError, OutputError, SeglabError, describe_os_error
from seglab.evaluation.loop import evaluate
from seglab.evaluation.scores import confusion_from_labels, scores_from_confusion
from seglab.export.onnx import ExportReport, export_onnx
from seglab.export.options import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_KEEP_FLOAT,
    DEFAULT_METHOD,
    DEFAULT_MIN_AGREEMENT,
    KEEP_FLOAT,
)
from seglab.inference.files import collect_inputs
from seglab.inference.onnx_runtime import (
    EXTRA_MODULES,
    METADATA_PREFIX,
    OnnxRuntimePredictor,
    import_extra,
    load_onnx,
    spec_metadata,
)
from seglab.inference.predictor import image_tensor, predict_logits
from seglab.inference.spec import InferenceSpec

if TYPE_CHECKING:
    from seglab.data.folder import FolderDataset

QUANTIZATION_KEY = METADATA_PREFIX + "quantization"
CHECK_KEY = METADATA_PREFIX + "int8_check"

# uint8 activations with int8 weights: the operand pair of x86's integer dot products (VPMADDUBSW, and VNNI's
# VPDPBUSD, multiply unsigned by signed bytes), which ONNX Runtime's CPU kernels use.
ACTIVATION_TYPE, WEIGHT_TYPE = "QUInt8", "QInt8"


@dataclasses.dataclass(frozen=True)
class QuantizationSettings:
    """How the file was quantised: what its `seglab.quantization` metadata entry records."""

    calibration_method: str = DEFAULT_METHOD
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    keep_float: str = DEFAULT_KEEP_FLOAT
    per_channel: bool = True

    def check(self) -> None:
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration method {self.calibration_method!r}; choose one of "
                              f"{', '.join(CALIBRATION_METHODS)}")
        if self.keep_float not in KEEP_FLOAT:
            raise ConfigError(f"keep_float must be one of {', '.join(KEEP_FLOAT)}, got {self.keep_float!r}")
        if self.calibration_images < 1:
            raise ConfigError(f"--calibration-images must be at least 1, got {self.calibration_images}")

    def metadata(self, used_images: int, float_nodes: Sequence[str]) -> dict[str, Any]:
        import onnxruntime

        return {"tool": f"onnxruntime {onnxruntime.__version__} quantize_static", "format": "QDQ",
                "activations": "uint8" if ACTIVATION_TYPE == "QUInt8" else "int8",
                "weights": "int8", "weight_granularity": "per-channel" if self.per_channel else "per-tensor",
                "calibration_method": self.calibration_method, "calibration_images": used_images,
                "keep_float": self.keep_float, "float_nodes": list(float_nodes)}


@dataclasses.dataclass(frozen=True)
class AgreementCheck:
    """The INT8 model against the float model on `images` images from `source`: the share of pixels with the
    same class, the mIoU of the INT8 classes against the float ones, and with masks each model's mIoU."""

    source: str
    images: int
    pixel_agreement: float
    miou_vs_float: float
    miou_float: float | None = None
    miou_int8: float | None = None

    def line(self) -> str:
        text = (f"INT8 vs float on {self.images} {self.source}: pixel agreement {self.pixel_agreement:.2%}, "
                f"mIoU of INT8 against float {self.miou_vs_float:.2%}")
        if self.miou_float is not None and self.miou_int8 is not None:
            text += f"; mIoU against the masks: float {self.miou_float:.2%}, INT8 {self.miou_int8:.2%}"
        return text


@dataclasses.dataclass(frozen=True)
class Int8Report:
    path: Path
    float_export: ExportReport
    quantization: dict[str, Any]
    check: AgreementCheck
    seconds: float

    def lines(self) -> list[str]:
        q = self.quantization
        return [self.float_export.lines()[0],
                f"quantised: QDQ, {q['activations']} activations, {q['weights']} {q['weight_granularity']} weights, "
                f"{q['calibration_method']} calibration on {q['calibration_images']} image(s)"
                + (f", kept in float: {', '.join(q['float_nodes'])}" if q["float_nodes"] else ""),
                self.check.line(),
                f"wrote {self.path} (INT8 ONNX) in {self.seconds:.1f} s"]


def image_paths(folder: str | Path, what: str) -> list[Path]:
    """The images of `folder` in the order `seglab predict` lists them, or a clear error."""
    items, problems = collect_inputs([folder])
    if problems or not items:
        reason = "; ".join(str(problem) for problem in problems) or "no image files"
        raise ConfigError(f"{what} {folder}: {reason}. Give a folder of images the model should see in use")
    return [item.path for item in items]


def network_inputs(paths: Sequence[Path], spec: InferenceSpec) -> Iterator[np.ndarray]:
    """What the exported network receives for each image, one at a time: the image read, resized to the working
    size and normalised by `predict_logits` itself (it hands the array to a stand-in network that keeps it)."""
    received: list[torch.Tensor] = []

    def keep(inputs: torch.Tensor) -> torch.Tensor:
        received.append(inputs)
        return inputs[:, :1]  # any logits-shaped answer: only the input is wanted

    for path in paths:
        predict_logits(keep, image_tensor(path)[None], spec, channels_last=False)
        yield received.pop().contiguous().numpy()


def float_node_names(proto: Any, keep_float: str) -> list[str]:
    """The nodes of a float graph that `keep_float` leaves unquantised (graph nodes are in topological order)."""
    if keep_float == "none":
        return []
    convolutions = [index for index, node in enumerate(proto.graph.node) if node.op_type == "Conv"]
    if not convolutions:
        raise ExportError("the exported graph has no Conv node, so there are no first and last layers to keep in "
                          "float; use keep_float none")
    nodes = proto.graph.node
    return [nodes[convolutions[0]].name, *(node.name for node in nodes[convolutions[-1]:])]


def ranges_every(images: int) -> int:
    """How many images' activations MinMax keeps before folding them into its ranges: about 4 (not every image's
    activations at once), but never a divisor of `images`: ONNX Runtime 1.32 fails with "No data is collected"
    when the last image leaves nothing unfolded."""
    return next(k for k in itertools.count(4) if images % k)


def quantize(float_path: Path, out_path: Path, spec: InferenceSpec, calibration: Sequence[Path],
             settings: QuantizationSettings, workdir: Path) -> dict[str, Any]:
    """`float_path` quantised into `out_path`, calibrated on `calibration`, with the float export's metadata and
    the `seglab.quantization` entry; returns that entry."""
    import onnx
    from onnxruntime import quantization
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "prepared.onnx"
    # ONNX Runtime's recommended preparation: its graph optimisations (constant folding, fusions) before the
    # ranges are measured. Symbolic shape inference is skipped: it cannot follow the dynamic height and width.
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared))
    kept = float_node_names(graph, settings.keep_float)
    input_name = graph.graph.input[0].name

    class Images(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.inputs = network_inputs(calibration, spec)

        def get_next(self) -> dict[str, np.ndarray] | None:
            array = next(self.inputs, None)
            return None if array is None else {input_name: array}

    try:
        quantization.quantize_static(
            str(prepared), str(out_path), Images(),
            # Quantize/DequantizeLinear pairs that ONNX Runtime fuses into integer kernels at load; writing the
            # integer operators (QLinearConv, ...) into the file instead ran alike (results/int8_variants.md).
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=settings.per_channel, activation_type=getattr(quantization.QuantType, ACTIVATION_TYPE),
            weight_type=getattr(quantization.QuantType, WEIGHT_TYPE), nodes_to_exclude=kept,
            calibrate_method=getattr(quantization.CalibrationMethod, CALIBRATION_METHODS[settings.calibration_method]),
            extra_options={"CalibMaxIntermediateOutputs": ranges_every(len(calibration))})
    except SeglabError:  # an unreadable calibration image: its own message names it
        raise
    except Exception as error:  # onnxruntime's quantiser raises assorted types for graphs it cannot handle
        raise ExportError(f"ONNX Runtime could not quantise {float_path.name}: "
                          f"{str(error).strip().splitlines()[0][:300]}") from error
    entry = settings.metadata(len(calibration), kept)
    proto = onnx.load(str(out_path))
    onnx.helper.set_model_props(proto, {**spec_metadata(spec), QUANTIZATION_KEY: json.dumps(entry)})
    onnx.save_model(proto, str(out_path))
    return entry


def class_maps(predictor: OnnxRuntimePredictor, images: list[Path] | FolderDataset
               ) -> tuple[list[np.ndarray], float | None]:
    """The predictor's class maps for image paths, or for a folder dataset of image/mask pairs with its mIoU."""
    if isinstance(images, list):
        return [np.asarray(labels) for labels in predictor.predict(list(images))], None
    labels: dict[int, np.ndarray] = {}
    evaluation = evaluate(predictor, images,
                          on_scored=lambda index, image, label, mask: labels.setdefault(index, label.numpy()))
    return [labels[index] for index in range(len(images))], float(evaluation.scores["miou"])


def agreement(float_model: OnnxRuntimePredictor, int8_model: OnnxRuntimePredictor, images: list[Path] | FolderDataset,
              source: str) -> AgreementCheck:
    """`AgreementCheck` of the two models on image paths or a folder dataset (`class_maps`)."""
    reference, miou_float = class_maps(float_model, images)
    quantised, miou_int8 = class_maps(int8_model, images)
    classes = float_model.spec.num_classes
    confusion = sum(confusion_from_labels(q, f, classes, ignore_index=None)
                    for q, f in zip(quantised, reference, strict=True))
    scores = scores_from_confusion(torch.from_numpy(confusion))
    return AgreementCheck(source, len(reference), float(scores["pixel_accuracy"]), float(scores["miou"]),
                          miou_float, miou_int8)


def refusal_hint(settings: QuantizationSettings, used_images: int) -> str:
    """What to try when the INT8 model disagrees with the float one: the options not in use already."""
    hints = [f"more calibration images (--calibration-images, {used_images} used) that look like the images the "
             "model will see"]
    if settings.keep_float == "none":
        hints.append("the first and last layers in float (--keep-float ends)")
    hints.append("per-tensor weights (--per-tensor)" if settings.per_channel else "per-channel weights")
    others = [name for name in CALIBRATION_METHODS if name != settings.calibration_method]
    hints.append(f"another calibration method (--calibration-method {' or '.join(others)})")
    return "; ".join(hints)


def export_int8(checkpoint: str | Path, out_path: str | Path, *, calibration: str | Path,
                settings: QuantizationSettings | None = None, check: str | Path | None = None,
                check_masks: str | Path | None = None, masks_read: FolderOptions = FolderOptions(),  # noqa: B008
                min_agreement: float = DEFAULT_MIN_AGREEMENT, opset: int | None = None) -> Int8Report:
    """Export a checkpoint (or run folder) to a statically quantised INT8 ONNX file at `out_path`.

    Calibrated on the first `settings.calibration_images` images of the folder `calibration`. Before the file
    is written, the INT8 model's class maps are compared with the float model's on the calibration images, or
    on the folder `check` (with `check_masks`, paired by stem as `seglab evaluate` pairs them and decoded with
    `masks_read`: each model's mIoU too). Pixel agreement below `min_agreement` raises `ExportError`, and
    nothing is written.
    """
    for name in EXTRA_MODULES:
        import_extra(name)
    import onnx

    started = time.perf_counter()
    settings = settings or QuantizationSettings()
    settings.check()
    if not 0 <= min_agreement <= 1:
        raise ConfigError(f"--min-agreement is a fraction of pixels in [0, 1], got {min_agreement}")
    if check_masks is not None and check is None:
        raise ConfigError("--check-masks needs --check: the image folder its masks belong to")
    calibration_paths = image_paths(calibration, "--calibration")[:settings.calibration_images]
    check_paths = image_paths(check, "--check") if check is not None else calibration_paths
    out_path = Path(out_path)

    with tempfile.TemporaryDirectory(prefix="seglab-int8-") as scratch:
        workdir = Path(scratch)
        float_path, int8_path = workdir / "float.onnx", workdir / "int8.onnx"
        float_export = export_onnx(checkpoint, float_path, opset=opset)
        float_model = load_onnx(float_path)
        spec = float_model.spec
        quantization = quantize(float_path, int8_path, spec, calibration_paths, settings, workdir)
        int8_model = load_onnx(int8_path)

        if check is not None and check_masks is not None:  # (check_masks without check was refused above)
            from seglab.data.validation import refuse_bad_files
            from seglab.evaluation.checkpoint import folder_dataset

            images: list[Path] | FolderDataset = folder_dataset(float_model, check, check_masks, masks_read)
            refuse_bad_files([images], "the INT8 check")
            source = f"images of {check} (masks in {check_masks})"
        else:
            images = check_paths
            source = "calibration images" if check is None else f"images of {check}"
        result = agreement(float_model, int8_model, images, source)
        if not result.pixel_agreement >= min_agreement:  # NaN (no pixels) fails too
            raise ExportError(f"the INT8 model disagrees with the float model: {result.line()}, below the "
                              f"required {min_agreement:.2%} (--min-agreement); no file was written. Try "
                              f"{refusal_hint(settings, len(calibration_paths))}")
        proto = onnx.load(str(int8_path))
        figures = {key: None if isinstance(value, float) and math.isnan(value) else value
                   for key, value in dataclasses.asdict(result).items()}
        proto.metadata_props.add(key=CHECK_KEY, value=json.dumps(figures))
        # Written beside the target and renamed when complete: a failed write leaves no partial file behind.
        temporary = out_path.with_name(f".{out_path.name}.{secrets.token_hex(4)}.part")
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            onnx.save_model(proto, str(temporary))
            os.replace(temporary, out_path)
        except OSError as error:
            raise OutputError(f"cannot write {out_path}: {describe_os_error(error)}") from None
        finally:
            temporary.unlink(missing_ok=True)
    return Int8Report(out_path, float_export, quantization, result, time.perf_counter() - started)
