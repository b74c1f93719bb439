"""Optimisers and learning-rate schedules.

Poly, cosine and one-cycle are multipliers of training progress in [0, 1]. Progress is the optimiser step over
the total steps when the run has an epoch or step limit, and elapsed training time over the wall-clock budget
when it only has `max_minutes`: the LR then decays on time, whatever the machine's speed or load.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from seglab.errors import ConfigError
from seglab.training.config import TrainConfig


def build_optimizer(config: TrainConfig, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD with momentum over the trainable `parameters`."""
    parameters = [p for p in parameters if p.requires_grad]
    # One fused kernel over all parameters instead of a Python loop per tensor (torch's CPU default): 1.04-1.13x
    # the DeepLabV3+ training step on a 2-core CPU (benchmarks/results/cpu_kernels.md). Other devices keep the default.
    fused = True if parameters and all(p.device.type in ("cpu", "cuda") for p in parameters) else None
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    raise ConfigError(f"unknown optimizer {config.optimizer!r}")


def lr_multiplier(config: TrainConfig, progress: float) -> float:
    """The LR as a share of `config.lr` at `progress` in [0, 1] for the poly, cosine and onecycle schedules."""
    p = min(max(progress, 0.0), 1.0)
    floor = config.min_lr_ratio
    if config.scheduler == "poly":
        return floor + (1 - floor) * (1 - p) ** config.poly_power
    if config.scheduler == "cosine":
        warmup = config.warmup_fraction
        if p < warmup:
            return p / warmup
        q = (p - warmup) / (1 - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * q))
    if config.scheduler == "onecycle":
        # torch's OneCycleLR shape (start at lr/25, cosine up, cosine down to lr/1e4), defined on progress so
        # that it also works against a time budget.
        start, end, peak = 1 / 25, 1 / 25e4, config.onecycle_pct_start
        if p < peak:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * p / peak))
        q = (p - peak) / (1 - peak)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * q))
    return 1.0


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer,
                    progress: Callable[[int], float]) -> dict | None:
    """The Lightning `lr_scheduler` config for `optimizer`; `progress(step)` maps a step count to [0, 1]."""
    if config.scheduler == "none":
        return None
    if config.scheduler == "plateau":
        # The seed's decay: shrink the LR when val mIoU stops improving, checked after each validation.
        scheduler = ReduceLROnPlateau(optimizer, mode="max", factor=config.plateau_factor,
                                      patience=config.plateau_patience, min_lr=config.lr * config.min_lr_ratio)
        return {"scheduler": scheduler, "monitor": "val/miou", "interval": "epoch",
                "frequency": config.val_every_n_epochs, "strict": True}
    scheduler = LambdaLR(optimizer, lambda step: lr_multiplier(config, progress(step)))
    return {"scheduler": scheduler, "interval": "step"}
