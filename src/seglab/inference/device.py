"""Where and in which number format a model runs: one rule for training's and prediction's "auto"."""

from __future__ import annotations

import torch

from seglab.errors import ConfigError
from seglab.inference.options import PRECISIONS


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` means the first GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"unknown device {device!r} ({error}); use cpu, cuda or cuda:N") from None


def bf16_is_fast(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 natively: GPUs with bf16, CPUs with AVX512-BF16/AMX (as oneDNN reports)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`precision` with "auto" made concrete: bf16 where it is fast, fp16 on GPUs without bf16, else fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a GPU; use bf16 or fp32 on a CPU")
    if precision != "auto":
        return precision
    if bf16_is_fast(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: plain fp32)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def channels_last_is_faster(device: torch.device, precision: str) -> bool:
    """Whether NHWC ("channels_last") memory runs this model family faster than NCHW for a resolved precision.

    GPUs' tensor-core convolutions want NHWC. On a CPU, oneDNN's bf16 convolutions run NHWC natively and
    NCHW through reorders; in fp32 its NCHW kernels are as fast (`benchmarks/speed.py`, results in
    benchmarks/results/speed.md).
    """
    if device.type == "cuda":
        return True
    return device.type == "cpu" and precision == "bf16"


def batch_norm_folding_is_faster(device: torch.device) -> bool:
    """Whether folding BatchNorm into the convolutions speeds up inference on `device`: the folded Predictor ran
    X65 at 1.09x (batch 8) and 1.05x (batch 1) the unfolded network on a 2-core CPU in bf16, but the folded
    network ran at 0.94x the unfolded one on an H100 in bf16 (benchmarks/results/speed.md)."""
    return device.type == "cpu"


def resolve_channels_last(channels_last: bool | str, device: torch.device, precision: str) -> bool:
    """`channels_last` (True, False or "auto") made concrete for a device and a resolved precision."""
    if channels_last == "auto":
        return channels_last_is_faster(device, precision)
    if not isinstance(channels_last, bool):
        raise ConfigError(f"channels_last must be true, false or auto, got {channels_last!r}")
    return channels_last
