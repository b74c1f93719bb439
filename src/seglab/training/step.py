"""One training step, the same in Lightning and in a bare loop.

`training_loss` is what `SegmentationLightningModule.training_step` computes (Lightning adds autocast, backward
and the optimiser step around it). `training_step` wraps the same function in those three for a loop without
Lightning: the benchmarks time and train with it, so what they measure is the engine's step. Neither imports
Lightning.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from seglab.errors import ConfigError
from seglab.inference.device import autocast_dtype, resolve_precision


def training_loss(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, loss: nn.Module) -> torch.Tensor:
    """The loss of one training batch: `loss(model(images), masks)`, images already prepared (normalised, at the
    training size, in the model's memory format)."""
    return loss(model(images), masks)


def training_step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, loss: nn.Module,
                  optimizer: torch.optim.Optimizer, *, precision: str = "fp32") -> torch.Tensor:
    """One optimiser step on a batch, as `seglab train` takes it: forward and loss (`training_loss`) under
    autocast for `precision` ("fp32", "bf16" or "auto", on the device of `images`), backward, `optimizer.step()`.

    Returns the loss, detached. fp16 is refused: Lightning's "16-mixed" scales the loss (a GradScaler), which
    a bare step does not; use bf16 or `seglab.training.train`.
    """
    resolved = resolve_precision(precision, images.device)
    if resolved == "fp16":
        raise ConfigError(f"training_step runs fp32 or bf16; precision {precision!r} resolved to fp16 on "
                          f"{images.device}, which needs loss scaling: pass precision='fp32' or train with "
                          "seglab.training.train")
    dtype = autocast_dtype(resolved)
    autocast = torch.autocast(images.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        value = training_loss(model, images, masks, loss)
    value.backward()
    optimizer.step()
    return value.detach()
