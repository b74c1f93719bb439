"""CPU kernel choices in a DeepLabV3+ training step: what `DepthwiseConv2d` and fused AdamW buy.

Times the whole training step (forward + backward + AdamW, Xception-41, output stride 16, batch 8, bf16
autocast, 64 and 128 px) with each choice against the baseline of plain `nn.Conv2d` depthwise layers and AdamW's
for-loop implementation, then every distinct depthwise layer at 128 px alone. Candidates run interleaved in one
process, so each ratio is taken under the same conditions. `--compile` adds torch.compile (inductor) at 64 px,
which spends minutes compiling.

    .venv/bin/python benchmarks/cpu_kernels.py    # writes benchmarks/results/cpu_kernels.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import torch
from torch import nn

from common import RESULTS, interleaved_seconds
from seglab.models import build_model
from seglab.models.layers import DepthwiseConv2d
from seglab.training import training_step
from seglab.training.losses import build_loss

REPORT = RESULTS / "cpu_kernels.md"
SIZE, BATCH = 128, 8


def plain_copy(conv: DepthwiseConv2d) -> nn.Conv2d:
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=False)
    plain.weight = conv.weight
    return plain


def interleaved_ms(candidates: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    return {name: 1000 * seconds for name, seconds in interleaved_seconds(candidates, repeats).items()}


def depthwise_inputs(model: nn.Module) -> list[tuple[DepthwiseConv2d, tuple[int, ...]]]:
    """One (layer, input shape) per distinct shape/stride/dilation among the model's depthwise layers."""
    distinct: dict[tuple, tuple[DepthwiseConv2d, tuple[int, ...]]] = {}

    def record(module: DepthwiseConv2d, args: tuple, output: torch.Tensor) -> None:
        shape = tuple(args[0].shape)
        distinct.setdefault((shape, module.stride, module.dilation), (module, shape))

    hooks = [module.register_forward_hook(record) for module in model.modules() if isinstance(module, DepthwiseConv2d)]
    with torch.no_grad():
        model(torch.rand(BATCH, 3, SIZE, SIZE))
    for hook in hooks:
        hook.remove()
    return list(distinct.values())


def layer_rows() -> list[str]:
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_xception41", num_classes=4, output_stride=16)
    rows = []
    for conv, shape in depthwise_inputs(model):
        x = torch.randn(shape, requires_grad=True)
        plain = plain_copy(conv)

        def step(layer: nn.Module, x: torch.Tensor = x) -> Callable[[], None]:
            def run() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = layer(x)
                y.float().sum().backward()
            return run

        ms = interleaved_ms({"plain": step(plain), "seglab": step(conv)}, repeats=15)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            difference = (plain(x).float() - conv(x).float()).abs().max().item()
        rows.append(f"| {shape[1]} ch, {shape[2]}x{shape[3]} | {conv.stride[0]} | {conv.dilation[0]} | "
                    f"{ms['plain']:.2f} | {ms['seglab']:.2f} | {ms['plain'] / ms['seglab']:.2f}x | {difference:.1e} |")
    return rows


def step_runner(*, plain_depthwise: bool, fused: bool, size: int, compiled: bool = False) -> Callable[[], None]:
    """seglab's training step (forward + CE + backward + AdamW) of DeepLabV3+ (Xception-41, output stride 16) on
    a random batch, bf16 autocast."""
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_xception41", num_classes=4, output_stride=16).train()
    if plain_depthwise:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, DepthwiseConv2d):
                    setattr(parent, name, plain_copy(child))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    forward = torch.compile(model) if compiled else model
    loss = build_loss("ce")
    images, masks = torch.rand(BATCH, 3, size, size), torch.randint(0, 4, (BATCH, size, size))

    def run() -> None:
        training_step(forward, images, masks, loss, optimizer, precision="bf16")
    return run


def step_rows(with_compile: bool) -> list[str]:
    rows = []
    for size in (64, 128):
        ms = interleaved_ms({
            "before": step_runner(plain_depthwise=True, fused=False, size=size),
            "depthwise": step_runner(plain_depthwise=False, fused=False, size=size),
            "fused": step_runner(plain_depthwise=True, fused=True, size=size),
            "both": step_runner(plain_depthwise=False, fused=True, size=size),
        }, repeats=10)
        for name, label in (("depthwise", "DepthwiseConv2d"), ("fused", "fused AdamW"), ("both", "both (seglab)")):
            rows.append(f"| training step, {size} px | {label} | {ms['before']:.0f} | {ms[name]:.0f} | "
                        f"{ms['before'] / ms[name]:.2f}x |")
        if with_compile and size == 64:
            eager = step_runner(plain_depthwise=False, fused=True, size=size)
            compiled = step_runner(plain_depthwise=False, fused=True, size=size, compiled=True)
            start = time.perf_counter()
            compiled()
            compile_seconds = time.perf_counter() - start
            ms = interleaved_ms({"eager": eager, "compiled": compiled}, repeats=10)
            rows.append(f"| training step, {size} px | torch.compile (first step {compile_seconds:.0f} s) | "
                        f"{ms['eager']:.0f} | {ms['compiled']:.0f} | {ms['eager'] / ms['compiled']:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    layers, steps = layer_rows(), step_rows(args.compile)
    text = "\n".join([
        "# CPU kernels: what seglab's choices buy in a DeepLabV3+ training step",
        "",
        f"`benchmarks/cpu_kernels.py{' --compile' if args.compile else ''}`; {platform.machine()}, "
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, load "
        f"{load:.2f} before the run. Xception-41 DeepLabV3+, output stride 16, batch {BATCH}, bf16 autocast; median "
        "milliseconds of interleaved repeats (each row's two columns were timed alternately in the same process).",
        "",
        "## Whole training step (forward + backward + AdamW)",
        "",
        "Baseline: every depthwise convolution a plain `nn.Conv2d`, AdamW's for-loop implementation (torch's CPU "
        "default).",
        "",
        "| step | change | baseline ms | with the change ms | speed-up |",
        "|---|---|---|---|---|",
        *steps,
        "",
        f"## Each depthwise layer at {SIZE} px: `DepthwiseConv2d` against `nn.Conv2d` (forward + backward)",
        "",
        "The difference column is the largest absolute difference between the two outputs (bf16 rounding).",
        "",
        "| input | stride | dilation | nn.Conv2d ms | DepthwiseConv2d ms | speed-up | max difference |",
        "|---|---|---|---|---|---|---|",
        *layers,
    ]) + "\n"
    print(text)
    REPORT.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
