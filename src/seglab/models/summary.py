"""Parameter and FLOP counts of the registered models (`seglab models`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from seglab.models.registry import build_model, list_models


@dataclass(frozen=True)
class ModelSummary:
    name: str
    parameters: int
    gflops: float


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_gflops(model: torch.nn.Module, input_size: int) -> float:
    """FLOPs of one forward pass on a (1, 3, size, size) input, counting a multiply-add as two FLOPs."""
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, input_size, input_size, device=device))
    return counter.get_total_flops() / 1e9


def describe_models(*, num_classes: int = 21, input_size: int = 224) -> list[ModelSummary]:
    rows = []
    for name in list_models():
        model = build_model(name, num_classes=num_classes)
        rows.append(ModelSummary(name, count_parameters(model), forward_gflops(model, input_size)))
    return rows
