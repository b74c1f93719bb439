"""What a training run runs on: its device, number format and memory format, each "auto" made concrete by the
rules prediction uses (`seglab.inference.device`)."""

from __future__ import annotations

from typing import Literal

import torch

from seglab.errors import ConfigError
from seglab.inference.device import resolve_channels_last, resolve_precision
from seglab.training.config import TrainConfig

LightningPrecision = Literal["bf16-mixed", "16-mixed", "32-true"]
# Lightning's names for the predictor's number formats.
LIGHTNING_PRECISIONS: dict[str, LightningPrecision] = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}


def uses_cuda(config: TrainConfig) -> bool:
    return config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())


def training_device(config: TrainConfig) -> torch.device:
    return torch.device("cuda" if uses_cuda(config) else "cpu")


def lightning_precision(config: TrainConfig) -> LightningPrecision:
    """`config.precision` as Lightning names it, with "auto" made concrete."""
    if config.precision != "auto":
        if config.precision == "16-mixed" and not uses_cuda(config):
            raise ConfigError("precision '16-mixed' needs a GPU; use 'bf16-mixed' or '32-true' on a CPU")
        return next(name for name in LIGHTNING_PRECISIONS.values() if name == config.precision)  # (a valid config)
    if config.accelerator not in ("auto", "cpu", "gpu", "cuda"):
        return "32-true"
    return LIGHTNING_PRECISIONS[resolve_precision("auto", training_device(config))]


def run_precision(config: TrainConfig) -> str:
    """The run's precision in the predictor's names (fp32, bf16, fp16)."""
    return {name: short for short, name in LIGHTNING_PRECISIONS.items()}[lightning_precision(config)]


def run_channels_last(config: TrainConfig) -> bool:
    """`config.channels_last`, with "auto" made concrete for the run's device and precision."""
    return resolve_channels_last(config.channels_last, training_device(config), run_precision(config))


def describe_step(resolved: TrainConfig, asked: TrainConfig) -> str:
    """One line saying how the training step runs (what `seglab train` prints): device, number format and
    memory format, marking the choices that "auto" made."""
    precision = lightning_precision(asked) + (" (auto)" if asked.precision == "auto" else "")
    memory = ("channels_last" if resolved.channels_last else "contiguous NCHW") + (
        " (auto)" if asked.channels_last == "auto" else "")
    return f"training {resolved.model} on {training_device(asked)}, {precision}, {memory} memory"
