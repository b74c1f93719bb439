"""Callbacks: throughput on the progress bar, the per-epoch history (metrics.csv + curves PNG), a grid of
validation predictions after every validation, RNG state, an exponential moving average of the weights, stopping on
SIGINT/SIGTERM (and SLURM's requeue signal)."""

from __future__ import annotations

import csv
import datetime
import math
import os
import random
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Checkpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from seglab.atomic import write_atomically, writes_in_progress


class Throughput(pl.Callback):
    """Logs training images/s (all ranks together), shown on the progress bar next to the loss and ETA."""

    # Not Lightning's ThroughputMonitor: it writes samples/s to the loggers only, every log_every_n_steps, never
    # to the progress bar, and synchronises CUDA after every batch to time it; this is a smoothed rate for the bar.

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self.rate: float | None = None
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Restart the clock after validation so that its time does not count as slow training steps.
        self._last = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            rate = len(batch[0]) * trainer.world_size / max(now - self._last, 1e-9)
            self.rate = rate if self.rate is None else self.smoothing * self.rate + (1 - self.smoothing) * rate
            pl_module.log("img/s", self.rate, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True)
        self._last = now


class EpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, with "Epoch n/last" only where the run has an epoch limit ("Epoch n" otherwise).

    Chosen here rather than left to Lightning, which picks its rich bar whenever `rich` happens to be installed,
    and that bar writes "Epoch 8/-2" (max_epochs - 1) for a run limited by steps or minutes.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch}/{trainer.max_epochs - 1}")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version number, not a measurement
        return metrics


class EpochHistory(pl.Callback):
    """One row per validation: epoch, step, train loss, val metrics, learning rate, images seen and time.

    Rank 0 rewrites `metrics.csv` and the training-curves PNG after every validation. The rows are part of
    the checkpoint, so a resumed run continues the same file.
    """

    # Not Lightning's CSVLogger + LearningRateMonitor (`logger: csv` writes CSVLogger's file to <run>/csv/): they
    # write a row per logging event (training steps and validations), columns sorted by name, without images seen
    # or elapsed time. metrics.csv keeps one row per validation with `epoch` first, restored from the checkpoint
    # on resume, and the same rows are `TrainResult.history` and the curves PNG.

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, float]] = []
        self._loss_sum = 0.0
        self._loss_count = 0
        self._images = 0
        self._elapsed = 0.0
        self._started: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        if self.rows:
            self._elapsed = self.rows[-1]["elapsed_s"]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._loss_sum += float(loss.detach())
        self._loss_count += 1
        self._images += len(batch[0]) * trainer.world_size

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        now = time.perf_counter()
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "images_seen": self._images,
            "elapsed_s": round(self._elapsed + now - (self._started or now), 3),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "train_loss": self._loss_sum / max(1, self._loss_count),
        }
        for key, value in sorted(metrics.items()):
            if key.startswith("val/"):
                row[key.replace("/", "_")] = float(value)
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        from seglab.evaluation.plots import plot_training_curves

        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]

        def write_csv(temporary: Path) -> None:
            with open(temporary, "w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)

        write_atomically(self.run_dir / "metrics.csv", write_csv)
        plot_training_curves(self.rows, self.run_dir / "training_curves.png")  # atomic itself

    def state_dict(self) -> dict[str, Any]:
        # The image count runs on past the last row when a signal saves the run mid-epoch.
        return {"rows": [dict(row) for row in self.rows], "images_seen": self._images}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]
        # Checkpoints written before the count was stored: it stood at the last row.
        self._images = int(state_dict.get("images_seen", self.rows[-1]["images_seen"] if self.rows else 0))


class ValidationSamples(pl.Callback):
    """After every validation, `count` validation images spread evenly over the split (`spread_indices`) with
    their prediction and truth.

    Rank 0 writes the grid (captioned with each image's mIoU) to `val_samples.png` in the run folder and logs
    the same picture to TensorBoard as "val/samples". The images are the same every time, so one sees the
    model learn them from one validation to the next.
    """

    def __init__(self, run_dir: str | Path, count: int = 8) -> None:
        self.run_dir = Path(run_dir)
        self.count = count
        self._samples: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.indices: list[int] = []  # the validation items shown, by index in the split

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not trainer.is_global_zero:
            return
        if self._samples is None:  # read once: the same images at every validation
            val = getattr(trainer.datamodule, "datasets", {}).get("val")
            from seglab.evaluation.plots import spread_indices

            self.indices = [] if val is None else spread_indices(len(val), self.count)
            self._samples = [val[i] for i in self.indices]
        if not self._samples:
            return
        with trainer.precision_plugin.val_step_context():
            predictions = self.predict(pl_module, [image for image, _ in self._samples])
        grid = self.draw(pl_module, predictions)
        write_atomically(self.run_dir / "val_samples.png",
                         lambda temporary: Image.fromarray(grid).save(temporary, format="PNG"))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/samples", grid, trainer.global_step, dataformats="HWC")

    @torch.no_grad()
    def predict(self, pl_module: pl.LightningModule, images: list[torch.Tensor]) -> list[np.ndarray]:
        """Class maps for `images` (each (3, H, W) in [0, 1]), one batch when they share a size."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            same_size = len({tuple(image.shape) for image in images}) == 1
            batches = [torch.stack(images)] if same_size else [image[None] for image in images]
            return [labels for batch in batches
                    for labels in pl_module(batch.to(pl_module.device)).argmax(1).cpu().numpy()]
        finally:
            pl_module.train(was_training)

    def draw(self, pl_module: pl.LightningModule, predictions: list[np.ndarray]) -> np.ndarray:
        from seglab.evaluation.plots import thumbnail, triplet_grid
        from seglab.evaluation.scores import confusion_from_labels, image_scores

        spec = pl_module.spec
        rows = []
        for index, (image, mask), prediction in zip(self.indices, self._samples, predictions, strict=True):
            truth = mask.numpy()
            scores = image_scores(confusion_from_labels(prediction, truth, spec.num_classes, spec.ignore_index))
            ious = [iou for iou in scores["iou_per_class"] if not math.isnan(iou)]  # classes in prediction or truth
            miou = f"{sum(ious) / len(ious):.2f}" if ious else "-"
            rows.append((*thumbnail(image, prediction, truth), f"val {index}: mIoU {miou}"))
        return triplet_grid(rows, spec.palette, pl_module.class_names)


class TimeBudget(Timer):
    """Lightning's Timer for `max_minutes`, which also validates the weights the budget ends with.

    Lightning validates a stop request only in an epoch that validates anyway (`check_val_every_n_epoch`); a
    budget that ran out in between would leave best.ckpt at an older validation, although the schedule has by
    then brought the learning rate down to its end, where the weights are usually best.
    """

    def __init__(self, minutes: float) -> None:
        super().__init__(duration=datetime.timedelta(minutes=minutes), interval="step")
        self._every_n_epochs: int | None = None

    def _check_time_remaining(self, trainer: pl.Trainer) -> None:
        super()._check_time_remaining(trainer)
        if trainer.should_stop and trainer.state.fn == "fit" and trainer.enable_validation:
            # Makes this epoch a validating one; put back before the checkpoints are written (they run after
            # every other callback), since Lightning's resume reads the setting to place itself in the epoch.
            self._every_n_epochs = trainer.check_val_every_n_epoch
            trainer.check_val_every_n_epoch = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._every_n_epochs is not None:
            trainer.check_val_every_n_epoch, self._every_n_epochs = self._every_n_epochs, None


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
            self.average = _cloned(pl_module.model.state_dict())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._restore_raw(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step <= self.updates:  # no optimiser step in this batch (gradient accumulation)
            return
        self.updates = trainer.global_step
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for name, value in pl_module.model.state_dict().items():
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
        checkpoint[self.STATE_KEY] = _cloned(self.raw if self.raw is not None else pl_module.model.state_dict())
        checkpoint["state_dict"].update({f"model.{name}": value for name, value in _cloned(self.average).items()})

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # Resuming: the state_dict Lightning restored is the average; the training weights are beside it.
        self.average = _cloned({name.removeprefix("model."): value for name, value in checkpoint["state_dict"].items()
                                if name.startswith("model.")})
        if self.STATE_KEY in checkpoint:
            pl_module.model.load_state_dict(checkpoint[self.STATE_KEY])
        self.raw = None

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict["updates"])

    def _use_average(self, pl_module: pl.LightningModule) -> None:
        if self.raw is None and self.average is not None:
            self.raw = _cloned(pl_module.model.state_dict())
            pl_module.model.load_state_dict(self.average)

    def _restore_raw(self, pl_module: pl.LightningModule) -> None:
        if self.raw is not None:
            pl_module.model.load_state_dict(self.raw)
            self.raw = None


def _cloned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in state.items()}


class EpochSeeds(pl.Callback):
    """Re-seeds torch, numpy and Python at the start of every training epoch from (seed, epoch, rank).

    The random numbers an epoch draws (augmentation, dropout) then depend only on where training is, not on
    how the process got there, so a run resumed from a checkpoint continues exactly. Storing the generator
    state in the checkpoint is not enough: Lightning draws from it between saving and the next epoch in an
    order that differs between an uninterrupted and a resumed run (dataloader iterators are re-created).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = (self.seed * 1_000_003 + trainer.current_epoch * 10_007 + trainer.global_rank) % 2**32
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device


def resume_command(run_dir: str | Path) -> str:
    """The command line that continues the run in `run_dir` from its last checkpoint."""
    return f"seglab train --resume {shlex.quote(str(run_dir))}"


class TrainingInterrupted(Exception):
    """Training stopped on a signal; the message says what was saved and how to resume.

    `saved`: a `last.ckpt` was written at the stop (the usual case). A second Ctrl+C stops at once without
    saving: the last complete `last.ckpt` (if any) is then the resume point. `requeued`: what became of the
    SLURM job, in words, when the scheduler's requeue signal stopped it.
    """

    def __init__(self, signum: signal.Signals, checkpoint: Path, run_dir: Path, epoch: int, step: int, *,
                 saved: bool = True, requeued: str = "") -> None:
        self.signum, self.checkpoint, self.run_dir = signum, checkpoint, run_dir
        self.resume_command = resume_command(run_dir)
        # The shell's convention for a process ended by a signal: 130 after SIGINT, 143 after SIGTERM, 138 after
        # SIGUSR1 (SLURM's requeue signal: the job is requeued by scontrol, whatever the exit code).
        self.exit_code = 128 + int(signum)
        if saved:
            what = f"training stopped by {signum.name} in epoch {epoch} after step {step}; saved {checkpoint}"
        else:
            what = f"training stopped at once by a second {signum.name} in epoch {epoch} at step {step}; " + (
                f"the last complete checkpoint, {checkpoint}, is intact" if checkpoint.is_file() else
                "no checkpoint had been written yet, so there is nothing to resume: run again")
        super().__init__(f"{what}. {requeued}Resume with: {self.resume_command}" if checkpoint.is_file()
                         else f"{what}.")


def requeue_slurm_job() -> str:
    """`scontrol requeue` for this SLURM job (the job id as Lightning's auto-requeue builds it); what happened,
    in words."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        code = subprocess.call(["scontrol", "requeue", job])
    except OSError as error:
        return f"SLURM job {job} NOT requeued (scontrol: {error}). "
    return f"SLURM job {job} requeued. " if code == 0 else f"SLURM job {job} NOT requeued (scontrol exit {code}). "


class StopOnSignal(Checkpoint):
    """SIGINT (Ctrl+C) or SIGTERM (`kill`, `timeout`, a scheduler's pre-emption) during training: training
    stops at the next safe point, `last.ckpt` is written there, and `TrainingInterrupted` ends the run.

    Safe points: the end of the current training step, or the end of the epoch (after its validation and its
    checkpoints), so a signal during validation or a checkpoint write costs no further step, in the last epoch
    too. The handlers only note the signal: stopping inside a step could save weights the optimiser had half
    updated. A second Ctrl+C stops at once without saving, except while a file is being written
    (`seglab.atomic`): that write finishes first, so no file is cut short. With DDP, a signal on any rank stops
    every rank at the same point. DataLoader workers ignore both signals (`seglab.training.datamodule`): a
    terminal, `timeout` or SLURM signals the whole process group, and a worker that died of it would end the
    run without a checkpoint.

    A `Checkpoint` so that Lightning runs its hooks after the `ModelCheckpoint`s' (it orders checkpoints last):
    at the end of an epoch, best.ckpt and last.ckpt are written before this stops the run.

    Under SLURM (`requeue`, Lightning's `SLURMEnvironment` with auto_requeue), its requeue signal (SIGUSR1,
    `#SBATCH --signal=USR1@120`) is handled the same way, and then rank 0 runs `scontrol requeue` as Lightning's
    auto-requeue does. Lightning's own handler for that signal (installed before training starts, put back after)
    is set aside while training runs: it would save `hpc_ckpt_<n>.ckpt` from inside the signal handler, possibly
    mid-step, a second resume point beside last.ckpt, and keep training until SLURM kills the job. SIGTERM never
    requeues: `scancel` sends it too; a pre-empting SLURM requeues the job itself.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint: str | Path, run_dir: str | Path, requeue: SLURMEnvironment | None = None) -> None:
        self.checkpoint, self.run_dir = Path(checkpoint), Path(run_dir)
        self.requeue_signal = requeue.requeue_signal if requeue is not None and requeue.auto_requeue else None
        self.received: signal.Signals | None = None
        self._at_once = False
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        if threading.current_thread() is threading.main_thread():  # Python sets handlers there only
            signals = (*self.SIGNALS, *([self.requeue_signal] if self.requeue_signal else []))
            self._previous = {signum: signal.signal(signum, self._note) for signum in signals}

    def _note(self, signum: int, frame: Any) -> None:
        # os.write, not print: the handler may interrupt a print to stderr (the progress bar), and buffered
        # streams refuse re-entrant writes.
        if self.received is None:
            self.received = signal.Signals(signum)
            os.write(2, f"\nseglab: {self.received.name} received: stopping after this step or validation and "
                        "saving last.ckpt (Ctrl+C again to stop at once, without saving)\n".encode())
        elif signum == signal.SIGINT and not self._at_once:
            self._at_once = True
            if writes_in_progress():
                os.write(2, b"\nseglab: SIGINT again: stopping as soon as the file being written is complete\n")
                return
            trainer = self._trainer
            epoch, step = (trainer.current_epoch, trainer.global_step) if trainer is not None else (0, 0)
            raise TrainingInterrupted(signal.SIGINT, self.checkpoint, self.run_dir, epoch, step, saved=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._stop_if_signalled(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's validation and the ModelCheckpoints' writes of this hook, before any further step.
        self._stop_if_signalled(trainer)

    def _stop_if_signalled(self, trainer: pl.Trainer) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        received = self.received or signal.SIGTERM  # None: the signal came to another DDP rank
        if self._at_once:  # a second Ctrl+C during a write: that write is complete, nothing more is written
            raise TrainingInterrupted(signal.SIGINT, self.checkpoint, self.run_dir, trainer.current_epoch,
                                      trainer.global_step, saved=False)
        trainer.save_checkpoint(self.checkpoint, weights_only=False)
        requeued = ""
        if self.requeue_signal is not None and trainer.strategy.reduce_boolean_decision(
                self.received == self.requeue_signal, all=False):
            received = self.requeue_signal
            requeued = requeue_slurm_job() if trainer.is_global_zero else "Rank 0 requeues the SLURM job. "
        raise TrainingInterrupted(received, self.checkpoint, self.run_dir, trainer.current_epoch, trainer.global_step,
                                  requeued=requeued)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        self._trainer = None
