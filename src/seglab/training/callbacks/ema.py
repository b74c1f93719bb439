"""An exponential moving average of the weights, which validation scores and checkpoints hold."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


class WeightEMA(pl.Callback):
    """An exponential moving average of the model's weights (and BatchNorm statistics), updated after every
    optimiser step, which validation scores and every checkpoint's `state_dict` holds: best.ckpt is chosen on,
    and predicts with, the averaged weights. The raw training weights travel in full checkpoints for --resume.

    The decay ramps up as (1 + t) / (10 + t) over the first steps (timm's ModelEmaV2 warm-up), so a short run
    is not averaged towards its random start.

    Not Lightning's EMAWeightAveraging: it swaps the raw weights back before `on_validation_end`, where
    ModelCheckpoint writes, so a weights-only best.ckpt would hold the raw weights, not the ones validated.
    Here the averaged weights stay in the model from validation until the next training step.
    """

    STATE_KEY = "raw_model_state"

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.average: dict[str, torch.Tensor] | None = None
        self.raw: dict[str, torch.Tensor] | None = None  # the training weights while the average is in the model
        self.updates = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.average is None:
            self.average = _cloned(_network(pl_module).state_dict())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._restore_raw(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step <= self.updates:  # no optimiser step in this batch (gradient accumulation)
            return
        self.updates = trainer.global_step
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        assert self.average is not None  # taken in setup("fit")
        with torch.no_grad():
            for name, value in _network(pl_module).state_dict().items():
                average = self.average[name]
                if average.is_floating_point():
                    average.lerp_(value.to(average.dtype), 1 - decay)
                else:
                    average.copy_(value)  # BatchNorm's batch counters

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._use_average(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._use_average(pl_module)  # the model a caller gets back is the one checkpointed

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Called for full checkpoints only (last.ckpt, a signal's save); a weights-only best.ckpt is written
        # during validation, when the average is already in the model.
        checkpoint[self.STATE_KEY] = _cloned(self.raw if self.raw is not None else _network(pl_module).state_dict())
        assert self.average is not None  # taken in setup("fit")
        checkpoint["state_dict"].update({f"model.{name}": value for name, value in _cloned(self.average).items()})

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Resuming: the state_dict Lightning restored is the average; the training weights are beside it.
        self.average = _cloned({name.removeprefix("model."): value for name, value in checkpoint["state_dict"].items()
                                if name.startswith("model.")})
        if self.STATE_KEY in checkpoint:
            _network(pl_module).load_state_dict(checkpoint[self.STATE_KEY])
        self.raw = None

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict["updates"])

    def _use_average(self, pl_module: pl.LightningModule) -> None:
        if self.raw is None and self.average is not None:
            self.raw = _cloned(_network(pl_module).state_dict())
            _network(pl_module).load_state_dict(self.average)

    def _restore_raw(self, pl_module: pl.LightningModule) -> None:
        if self.raw is not None:
            _network(pl_module).load_state_dict(self.raw)
            self.raw = None


def _network(pl_module: pl.LightningModule) -> torch.nn.Module:
    """The network the module trains, its `model` (which Module's `__getattr__` types as a tensor or a module)."""
    model = pl_module.model
    assert isinstance(model, torch.nn.Module)
    return model


def _cloned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in state.items()}
