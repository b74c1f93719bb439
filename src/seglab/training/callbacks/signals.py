"""Stopping on SIGINT/SIGTERM at a safe point with a resumable last.ckpt, and SLURM's requeue signal."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments.slurm import SLURMEnvironment
from lightning.pytorch.callbacks import Checkpoint

from seglab.atomic import writes_in_progress


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
