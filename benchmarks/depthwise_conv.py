"""Depthwise convolutions on a CPU: `seglab.models.layers.DepthwiseConv2d` against a plain `nn.Conv2d`.

For every distinct depthwise layer of DeepLabV3+ (Xception-41, output stride 16) at 128 px, batch 8, times
forward + backward of the plain convolution and of `DepthwiseConv2d` (same weights) in bf16 autocast, then the
whole training step (forward + backward + AdamW) of the model as built and of the model with its depthwise
layers swapped back to plain `nn.Conv2d`. Both variants run interleaved in the same process, so the ratios
are taken under the same conditions.

    .venv/bin/python benchmarks/depthwise_conv.py    # writes benchmarks/results/depthwise_conv.md
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models import build_model
from seglab.models.layers import DepthwiseConv2d

RESULTS = Path(__file__).parent / "results" / "depthwise_conv.md"
SIZE, BATCH = 128, 8


def plain_copy(conv: DepthwiseConv2d) -> nn.Conv2d:
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=False)
    plain.weight = conv.weight
    return plain


def interleaved_ms(candidates: dict[str, callable], repeats: int) -> dict[str, float]:
    # Median of alternating runs, so drifting machine load affects every candidate alike.
    for run in candidates.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def depthwise_inputs(model: nn.Module) -> list[tuple[DepthwiseConv2d, tuple[int, ...]]]:
    shapes: dict[int, tuple[DepthwiseConv2d, tuple[int, ...]]] = {}

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        shapes.setdefault(id(module), (module, tuple(args[0].shape)))

    hooks = [module.register_forward_hook(record) for module in model.modules() if isinstance(module, DepthwiseConv2d)]
    with torch.no_grad():
        model(torch.rand(BATCH, 3, SIZE, SIZE))
    for hook in hooks:
        hook.remove()
    distinct = {}
    for conv, shape in shapes.values():
        distinct.setdefault((shape, conv.stride, conv.dilation), (conv, shape))
    return list(distinct.values())


def layer_rows() -> list[str]:
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_xception41", num_classes=4, output_stride=16)
    rows = []
    for conv, shape in depthwise_inputs(model):
        x = torch.randn(shape, requires_grad=True)
        plain = plain_copy(conv)

        def step(layer: nn.Module, x: torch.Tensor = x) -> callable:
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


def model_row() -> str:
    def training_step(plain: bool) -> callable:
        torch.manual_seed(0)
        model = build_model("deeplabv3plus_xception41", num_classes=4, output_stride=16).train()
        if plain:
            for parent in list(model.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, DepthwiseConv2d):
                        setattr(parent, name, plain_copy(child))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        images, masks = torch.rand(BATCH, 3, SIZE, SIZE), torch.randint(0, 4, (BATCH, SIZE, SIZE))

        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(images).float(), masks)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return run

    ms = interleaved_ms({"plain": training_step(True), "seglab": training_step(False)}, repeats=12)
    return (f"| whole training step (batch {BATCH}, {SIZE} px) | | | {ms['plain']:.0f} | {ms['seglab']:.0f} | "
            f"{ms['plain'] / ms['seglab']:.2f}x | |")


def main() -> None:
    load = os.getloadavg()[0]
    rows = [*layer_rows(), model_row()]
    header = [
        "# Depthwise convolutions on a CPU: DepthwiseConv2d vs nn.Conv2d",
        "",
        f"`benchmarks/depthwise_conv.py`; {platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, load {load:.2f} before the run. "
        "Forward + backward in bf16 autocast, median milliseconds of interleaved repeats; the difference column is "
        "the largest absolute difference between the two outputs (bf16 rounding).",
        "",
        "| input | stride | dilation | nn.Conv2d ms | DepthwiseConv2d ms | speed-up | max difference |",
        "|---|---|---|---|---|---|---|",
    ]
    text = "\n".join(header + rows) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
