"""INT8 variants and profile (issue 24): ONNX Runtime and PyTorch INT8 forms of one X65 OS16 graph at 224 x 224.

The same random-weight DeepLabV3+ Xception-65 (output stride 16, 21 classes) as benchmarks/int8.py, as ONNX
Runtime sessions on raw arrays (no Predictor around them), against smp at its best (bf16 + channels_last), in
interleaved rounds in one process:

- fp32: seglab's float export;
- INT8 QDQ: seglab's `export_int8` with its defaults (what `seglab export --int8` writes), in a session with
  ONNX Runtime's default options (idle pool threads spin);
- INT8 QOperator: the same export with `QuantizationSettings(quant_format="QOperator")` (QLinearConv nodes
  written into the file instead of Q/DQ pairs fused at load);
- INT8 QDQ on 1 thread: whether two threads help at all on graphs this small;
- INT8 QDQ without spinning: idle pool threads sleep instead of spinning (several sessions and PyTorch share
  the 2 cores in this process), as seglab's ONNX engine (`seglab.inference.onnx_runtime`) now runs every file;
- PyTorch x86 INT8: PyTorch's own post-training flow (`torch.ao.quantization.quantize_fx`, the `x86` qconfig:
  fbgemm/oneDNN kernels, BatchNorm folded by `prepare_fx`), calibrated on the same 16 images, channels_last.

Then smp and INT8 QDQ alone, back to back, against their interleaved figures (what sharing one process with
other runtimes' threads costs each), and ONNX Runtime's profile of the QDQ graph at batch 1 and batch 8:
kernel time per operator type, and the share of the wall time the kernels account for (the rest is per-node
dispatch and threading).

    .venv-peers/bin/python benchmarks/int8_variants.py     # ~8 min on 2 cores; writes results/int8_variants.md
"""

from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, cpu_name, forward_runner, interleaved_seconds, seglab_model, smp_model, write_checkpoint
from int8 import write_calibration

NAME = "deeplabv3plus_xception65"


def session(path: Path, threads: int, profile_prefix: str | None = None, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spinning:  # idle pool threads sleep at once instead of spinning for the next parallel section
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def qoperator_export(float_path: Path, out_path: Path, calibration: Path, workdir: Path) -> None:
    """The float export quantised as `seglab export --int8` does it, but in QOperator form."""
    from seglab.export.int8 import QuantizationSettings, quantize
    from seglab.inference.onnx_runtime import load_onnx

    quantize(float_path, out_path, load_onnx(float_path).spec, sorted(calibration.iterdir())[:16],
             QuantizationSettings(quant_format="QOperator"), workdir)


class BackboneAndHead(torch.nn.Module):
    """A SegmentationModel without its padding branch (Python on the input's size, which FX cannot trace; the
    224 x 224 inputs here need no padding)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(images))
        return torch.nn.functional.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def pytorch_x86_int8(network: torch.nn.Module, calibration: Path, spec) -> torch.nn.Module:
    """`network` quantised by PyTorch's FX post-training flow with the x86 backend, calibrated on the first 16
    images of `calibration` as the predictor reads them."""
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping, quantize_fx
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig

    from seglab.export.int8 import network_inputs
    from seglab.models.heads import ASPPPooling
    from seglab.models.layers import DepthwiseConv2d

    network = copy.deepcopy(network).eval()
    # FX traces into modules outside torch.nn; DepthwiseConv2d's CPU routes branch on the map's size, so it
    # becomes the plain convolution it equals (what `seglab export` writes too).
    for parent in list(network.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, DepthwiseConv2d):
                plain = torch.nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                                        padding=child.padding, dilation=child.dilation, groups=child.groups,
                                        bias=child.bias is not None)
                plain.load_state_dict(child.state_dict())
                setattr(parent, child_name, plain)
    torch.backends.quantized.engine = "x86"
    network = BackboneAndHead(network).eval()  # the swapped-in convolutions start in training mode
    example = torch.rand(1, 3, 224, 224)
    # ASPP's image pooling broadcasts by the map's size (Python that FX cannot trace): it stays a float module,
    # a 1x1 convolution on a pooled vector.
    untraced = PrepareCustomConfig().set_non_traceable_module_classes([ASPPPooling])
    prepared = quantize_fx.prepare_fx(network, get_default_qconfig_mapping("x86"), (example,),
                                      prepare_custom_config=untraced)
    with torch.no_grad():
        for array in network_inputs(sorted(calibration.iterdir())[:16], spec):
            prepared(torch.from_numpy(array))
    return quantize_fx.convert_fx(prepared).to(memory_format=torch.channels_last)


def profile(path: Path, images: np.ndarray, workdir: Path, runs: int = 5) -> dict:
    sess = session(path, torch.get_num_threads(), str(workdir / f"{path.stem}_{len(images)}"))
    name = sess.get_inputs()[0].name
    sess.run(None, {name: images})
    started = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {name: images})
    wall = (time.perf_counter() - started) / runs
    events = json.loads(Path(sess.end_profiling()).read_text())
    spent: collections.Counter = collections.Counter()
    nodes: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    kernel = sum(spent.values()) / (runs + 1) / 1e6
    return {"wall_ms": 1e3 * wall, "kernel_ms": 1e3 * kernel, "nodes_run": sum(nodes.values()) // (runs + 1),
            "time_share": {op: value / sum(spent.values()) for op, value in spent.most_common(8)}}


def main() -> None:
    from seglab.export.int8 import export_int8
    from seglab.export.onnx import export_onnx
    from seglab.inference.loading import read_checkpoint, spec_from_checkpoint

    lines = ["# INT8 variants: X65 OS16 at 224 x 224 on ONNX Runtime", "",
             f"`.venv-peers/bin/python benchmarks/int8_variants.py` on **{cpu_name()}**, "
             f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}; random weights; images/s, "
             "medians of interleaved rounds after warm-up, raw ONNX Runtime sessions (no Predictor).", ""]
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        calibration = write_calibration(workdir / "calibration", 16)
        torch.manual_seed(0)
        network = seglab_model(NAME)
        checkpoint = workdir / "x65.ckpt"
        write_checkpoint(network, checkpoint, NAME)
        float_path, qdq_path, qop_path = workdir / "x65.onnx", workdir / "x65.qdq.onnx", workdir / "x65.qop.onnx"
        export_onnx(checkpoint, float_path)
        export_int8(checkpoint, qdq_path, calibration=calibration, min_agreement=0.0)
        qoperator_export(float_path, qop_path, calibration, workdir)
        threads = torch.get_num_threads()
        sessions = {"fp32": session(float_path, threads), "INT8 QDQ": session(qdq_path, threads),
                    "INT8 QOperator": session(qop_path, threads), "INT8 QDQ, 1 thread": session(qdq_path, 1),
                    "INT8 QDQ, no spinning": session(qdq_path, threads, spinning=False)}
        torch_int8 = pytorch_x86_int8(network, calibration, spec_from_checkpoint(read_checkpoint(checkpoint)))
        smp = smp_model("tu-xception65")
        table = ["| batch | smp bf16+CL | " + " | ".join(sessions) + " | PyTorch x86 INT8 | best INT8 / smp |",
                 "|---|---|" + "---|" * (len(sessions) + 1) + "---|"]
        alone: dict[int, dict[str, float]] = {}
        beside: dict[int, dict[str, float]] = {}
        for batch in (1, 8):
            images = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            array = ((images - 0.5) / 0.5).numpy()
            runners = {"smp bf16+CL": forward_runner(smp, images, "bf16", True)}
            for label, sess in sessions.items():
                runners[label] = lambda s=sess, a=array: s.run(None, {s.get_inputs()[0].name: a})
            quantised_input = torch.from_numpy(array).contiguous(memory_format=torch.channels_last)

            def torch_int8_forward(x: torch.Tensor = quantised_input) -> None:
                with torch.no_grad():
                    torch_int8(x)

            runners["PyTorch x86 INT8"] = torch_int8_forward
            seconds = interleaved_seconds(runners, 7, warmup=2)
            # Each contender alone, back to back: what interleaving with the others costs it.
            alone[batch] = {label: batch / interleaved_seconds({label: runners[label]}, 7, warmup=2)[label]
                            for label in ("smp bf16+CL", "INT8 QDQ", "INT8 QDQ, no spinning")}
            beside[batch] = {label: batch / seconds[label] for label in alone[batch]}
            rates = {label: batch / value for label, value in seconds.items()}
            best = max(value for label, value in rates.items() if "INT8" in label)
            table.append(f"| {batch} | " + " | ".join(f"{value:.2f}" for value in rates.values())
                         + f" | {best / rates['smp bf16+CL']:.2f}x |")
            print(table[-1], flush=True)
        lines += [*table, "", "The same contenders alone (7 calls back to back after warm-up) against their figure "
                  "in the interleaved rounds above, images/s:", "",
                  "| batch | contender | alone | interleaved | ratio |", "|---|---|---|---|---|"]
        lines += [f"| {batch} | {label} | {rate:.2f} | {beside[batch][label]:.2f} | "
                  f"{beside[batch][label] / rate:.2f} |" for batch in alone for label, rate in alone[batch].items()]
        lines += ["", "ONNX Runtime profile of the INT8 QDQ graph (5 runs after one warm-up):", "",
                          "| batch | wall ms per run | kernel ms per run | nodes run | kernel time share (top 8) |",
                          "|---|---|---|---|---|"]
        for batch in (1, 8):
            array = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            found = profile(qdq_path, array, workdir)
            shares = ", ".join(f"{op} {share:.0%}" for op, share in found["time_share"].items())
            lines.append(f"| {batch} | {found['wall_ms']:.1f} | {found['kernel_ms']:.1f} | {found['nodes_run']} | "
                         f"{shares} |")
            print(lines[-1], flush=True)
    (RESULTS / "int8_variants.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
