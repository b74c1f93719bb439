"""`train(config)`: the run folder, the Lightning Trainer with seglab's callbacks, and resuming a run."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments.slurm import SLURMEnvironment
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from seglab.atomic import copy_atomically, remove_temporaries, write_atomically, write_text_atomically
from seglab.data.protocols import dataset_length
from seglab.errors import ConfigError, OutputError, describe_os_error
from seglab.evaluation.checkpoint import CheckpointEvaluation, evaluate_and_write
from seglab.evaluation.loop import OnScored
from seglab.inference.loading import model_state, read_checkpoint_and_sha256
from seglab.inference.predictor import Predictor
from seglab.training.callbacks import (
    EpochHistory,
    EpochProgressBar,
    EpochSeeds,
    StopOnSignal,
    Throughput,
    TimeBudget,
    ValidationSamples,
    WeightEMA,
    resume_command,
)
from seglab.training.checkpoints import AtomicCheckpointIO
from seglab.training.config import TrainConfig, check_resume_overrides, load_config, save_config
from seglab.training.datamodule import SegmentationDataModule
from seglab.training.distributed import layer_sync, lightning_strategy, lost_processes_named
from seglab.training.finetune import initialise_run_from
from seglab.training.hardware import describe_step, lightning_precision, run_precision, training_device
from seglab.training.loggers import build_loggers
from seglab.training.losses import class_weights_from_frequencies
from seglab.training.module import SegmentationLightningModule
from seglab.training.pause_points import PausePoints, pause_requested
from seglab.version import __version__

# Lightning's advertising tip (a log record) and two warnings about things seglab does on purpose.
_NOISE = ("litlogger", "overridden `on_after_batch_transfer`", "isinstance(treespec, LeafSpec)")
_NOISY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _NOISE)


@contextlib.contextmanager
def _lightning_noise_silenced() -> Iterator[None]:
    # Scoped to a train() call: importing seglab.training leaves the process's warning and log filters alone.
    noise = _DropNoise()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        with warnings.catch_warnings():
            for text in _NOISE[1:]:
                warnings.filterwarnings("ignore", message=f".*{re.escape(text)}.*")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


# A write that fails with one of these is a full or read-only disk, not a bug: an OutputError, not a traceback.
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

# At most this many training masks are read to estimate class frequencies for class_weights: "auto".
_WEIGHT_SAMPLES = 200


@dataclass
class TrainResult:
    """What a finished `train` call leaves behind."""

    run_dir: Path
    best_checkpoint: Path | None  # by val mIoU; None if no validation ran
    last_checkpoint: Path | None
    best_miou: float | None
    history: list[dict[str, float]]  # one row per validation, as in metrics.csv
    module: SegmentationLightningModule  # holds the weights at the end of training
    datamodule: SegmentationDataModule
    trainer: pl.Trainer
    test: CheckpointEvaluation | None = None  # best.ckpt scored on the test split (test_metrics.json)


def run_dir_of(config: TrainConfig) -> Path:
    return Path(config.runs_dir) / config.name


def _class_weights(config: TrainConfig, datamodule: SegmentationDataModule) -> list[float] | None:
    if config.class_weights != "auto":
        if config.class_weights is not None and len(config.class_weights) != datamodule.num_classes:
            raise ConfigError(f"class_weights has {len(config.class_weights)} entries but the dataset has "
                              f"{datamodule.num_classes} classes ({', '.join(datamodule.class_names)})")
        return config.class_weights
    train = datamodule.datasets["train"]
    masks = (train[i][1] for i in range(min(dataset_length(train), _WEIGHT_SAMPLES)))
    return class_weights_from_frequencies(masks, datamodule.num_classes, ignore_index=datamodule.ignore_index)


def build_trainer(config: TrainConfig, run_dir: Path, *, extra_callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """The Lightning Trainer for `config`, writing into `run_dir`."""
    # best.ckpt is for prediction: weights, config and class names only, a third of a full checkpoint.
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/miou", mode="max",
                           save_top_k=1, save_weights_only=True, auto_insert_metric_name=False,
                           enable_version_counter=False)
    # A second, unmonitored checkpoint for last.ckpt: Lightning's save_last only writes when best.ckpt
    # improved, which would leave resume points several epochs behind.
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    averaging = [WeightEMA(config.ema_decay)] if config.ema_decay is not None else []
    budget = [TimeBudget(config.max_minutes)] if config.max_minutes is not None else []
    callbacks: list[pl.Callback] = [Throughput(), EpochHistory(run_dir), *averaging, ValidationSamples(run_dir),
                                    EpochSeeds(config.seed), *budget, *extra_callbacks, best, last]
    # A signal saves its state where the unmonitored checkpoint writes: --resume reads it from there.
    # Under srun, the SLURM environment Lightning would detect anyway, made here so that StopOnSignal knows its
    # requeue signal: seglab saves last.ckpt at a step's end and then requeues (see StopOnSignal).
    slurm = SLURMEnvironment(auto_requeue=True) if SLURMEnvironment.detect() else None
    assert last.dirpath is not None  # given above
    callbacks.append(StopOnSignal(Path(last.dirpath) / f"{last.filename}{last.FILE_EXTENSION}", run_dir,
                                  requeue=slurm))
    if config.progress_bar:
        callbacks.append(EpochProgressBar())
    if pause_requested():  # the fault tests' hook (training/pause_points.py); never set otherwise
        callbacks.append(PausePoints())
    if config.early_stopping_patience is not None:
        # `patience` counts validations, which happen every val_every_n_epochs epochs.
        callbacks.append(EarlyStopping(monitor="val/miou", mode="max", patience=config.early_stopping_patience,
                                       check_on_train_epoch_end=False))
    return pl.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=lightning_strategy(config),
        precision=lightning_precision(config),
        max_epochs=config.max_epochs if config.max_epochs is not None else -1,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        callbacks=callbacks,
        logger=build_loggers(config, run_dir),
        plugins=[AtomicCheckpointIO(), *([slurm] if slurm else []), *layer_sync(config)],
        default_root_dir=run_dir,
        check_val_every_n_epoch=config.val_every_n_epochs,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        log_every_n_steps=config.log_every_n_steps,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        # The sanity check would spend validation time (and on resume, random numbers) before training.
        num_sanity_val_steps=0,
        # The DataModule shards data across ranks itself, with the same seeded order as one process.
        use_distributed_sampler=False,
    )


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          model: torch.nn.Module | None = None, datamodule: SegmentationDataModule | None = None,
          extra_callbacks: Sequence[pl.Callback] = (), on_test_scored: OnScored | None = None,
          created_by: str = "seglab train") -> TrainResult:
    """Train `config` into `runs_dir/name/`; with `resume`, continue from its `checkpoints/last.ckpt`. With
    `overwrite`, an existing run folder (`is_run_folder`) is replaced; any other non-empty folder is refused.

    `model` and `datamodule` replace the ones the config names (for tests and notebooks); the checkpoint then
    still records the config, but rebuilding the module from it needs the registered model. `on_test_scored`
    sees each test image as training's final test evaluation scores it (the demo saves its masks there).
    `created_by` names the command in a new run folder's `RUN_MARKER`.
    """
    config = config.with_normalization_resolved()  # a fine-tune's: read from init_from's checkpoint
    with _lightning_noise_silenced():
        return _train(config, resume=resume, overwrite=overwrite, model=model, datamodule=datamodule,
                      extra_callbacks=extra_callbacks, on_test_scored=on_test_scored, created_by=created_by)


def _train(config: TrainConfig, *, resume: bool, overwrite: bool, model: torch.nn.Module | None,
           datamodule: SegmentationDataModule | None, extra_callbacks: Sequence[pl.Callback],
           on_test_scored: OnScored | None, created_by: str) -> TrainResult:
    run_dir = run_dir_of(config)
    last = run_dir / "checkpoints" / "last.ckpt"
    pl.seed_everything(config.seed, workers=True, verbose=False)
    trainer = build_trainer(config, run_dir, extra_callbacks=list(extra_callbacks))
    # The data are checked before the run folder is touched: a bad file must not leave a run folder behind that
    # blocks the corrected command, nor cost the previous run that --overwrite would replace.
    datamodule = datamodule or SegmentationDataModule.from_config(config)
    if trainer.is_global_zero:  # each other machine's first process checks its files when fit calls this
        datamodule.prepare_data()
    datamodule.setup("fit")  # the module below is built from the dataset's classes
    with contextlib.ExitStack() as lock:
        # With DDP the other ranks start later and find rank 0's folder; only rank 0 checks, locks and prepares it.
        if trainer.is_global_zero:
            _prepare_run_folder(config, run_dir, last, lock, resume=resume, overwrite=overwrite,
                                created_by=created_by)
        module = SegmentationLightningModule(config, datamodule.num_classes, datamodule.class_names,
                                             _class_weights(config, datamodule), model=model,
                                             palette=datamodule.palette)
        if trainer.is_global_zero:
            print(f"seglab: {describe_step(module.config, config)}", file=sys.stderr)
        if config.init_from is not None and not resume:
            initialise_run_from(module.model, config.init_from, run_dir, main_process=trainer.is_global_zero)
        try:
            with lost_processes_named(trainer, run_dir, config.ddp_timeout_s):
                trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None,
                            weights_only=True)
        except BaseException as error:
            if not isinstance(error, (OutputError, OSError)):
                raise
            if isinstance(error, OSError) and error.errno not in _DISK_ERRORS:
                raise
            # seglab's own files say which file and what is left of it; a logger's (Lightning's CSVLogger,
            # TensorBoard) only raise the OSError, so its file is named here.
            cause = error if isinstance(error, OutputError) else (
                f"cannot write {error.filename or run_dir}: {describe_os_error(error)}. Free space on that disk.")
            then = (f"then continue from its last checkpoint with `{resume_command(run_dir)}`" if last.is_file()
                    else "then run again")
            raise OutputError(f"{cause} Training stopped; {then}.") from error
        checkpoint = trainer.checkpoint_callback
        assert isinstance(checkpoint, ModelCheckpoint)  # build_trainer's best.ckpt, the first one
        callbacks = trainer.callbacks  # pyright: ignore[reportAttributeAccessIssue] (set by Lightning's connectors)
        history = next(c for c in callbacks if isinstance(c, EpochHistory)).rows
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
        test = None
        if (trainer.is_global_zero and config.test_after_training and best is not None
                and "test" in datamodule.datasets):
            test = evaluate_best_on_test(config, module, datamodule, best, run_dir, on_scored=on_test_scored)
    return TrainResult(
        run_dir=run_dir,
        best_checkpoint=best,
        last_checkpoint=last if last.is_file() else None,
        best_miou=float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        history=history,
        module=module,
        datamodule=datamodule,
        trainer=trainer,
        test=test,
    )


# The file that makes a folder a seglab run folder, written into every new run before anything else: JSON with
# the seglab version and the command that made the folder. A common name like config.yaml proves nothing (a
# user's own folder may hold one), and `--overwrite` empties only folders that are seglab's.
RUN_MARKER = ".seglab-run"


def write_run_marker(run_dir: Path, created_by: str) -> None:
    """Marks `run_dir` as a run folder that `created_by` ("seglab train", "seglab demo") made."""
    marker = {"seglab_version": __version__, "created_by": created_by}
    write_text_atomically(run_dir / RUN_MARKER, json.dumps(marker) + "\n")


def run_marker(run_dir: Path) -> dict[str, Any] | None:
    """What `run_dir`'s marker says, or None where it has none (or one seglab cannot read)."""
    with contextlib.suppress(OSError, ValueError):
        marker = json.loads((run_dir / RUN_MARKER).read_text(encoding="utf-8"))
        return marker if isinstance(marker, dict) else None
    return None


def is_run_folder(run_dir: Path) -> bool:
    """Whether `run_dir` is a seglab run folder, which `--overwrite` may empty. The rule: it holds `RUN_MARKER`;
    or, for runs of a seglab from before the marker, both config.yaml and a checkpoints/ folder."""
    if (run_dir / RUN_MARKER).is_file():
        return True
    return (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints").is_dir()


def _prepare_run_folder(config: TrainConfig, run_dir: Path, last: Path, lock: contextlib.ExitStack, *,
                        resume: bool, overwrite: bool, created_by: str) -> None:
    """Checks the run folder, locks it for this process (held until `lock` closes) and, for a new run, empties
    it and writes the marker and config.yaml. Nothing is deleted before the lock is held: the folder may be
    another process's."""
    if resume:
        if not last.is_file():
            raise ConfigError(f"cannot resume {run_dir}: {last} does not exist")
        lock.enter_context(run_folder_lock(run_dir))
        remove_temporaries(run_dir)  # left by writes that a kill or power cut interrupted
        return
    existing = [path for path in run_dir.iterdir() if path.name != LOCK_NAME] if run_dir.is_dir() else []
    if existing:
        if not overwrite:
            raise ConfigError(f"run folder {run_dir} already exists; resume it with `seglab train --resume "
                              f"{run_dir}` or choose another name with `--set name=...`")
        if not is_run_folder(run_dir):
            raise ConfigError(f"{run_dir} is not a seglab run folder (it has no {RUN_MARKER} marker, nor the "
                              "config.yaml and checkpoints/ of an older seglab run), so it is not overwritten; choose "
                              "another name with `--set name=...` or move the folder away")
        source = Path(config.init_from).resolve() if config.init_from else None
        if source is not None and (source == run_dir.resolve() or run_dir.resolve() in source.parents):
            raise ConfigError(f"init_from {config.init_from} lies inside the run folder {run_dir}, which this run "
                              "would overwrite; give the new run another name")
    lock.enter_context(run_folder_lock(run_dir))
    # The marker first, and it stays while the rest goes: an overwrite killed half way (config.yaml already
    # deleted) leaves a folder that is still recognisably seglab's, so the same overwrite can be run again.
    write_run_marker(run_dir, created_by)
    for path in existing:  # the lock file stays: a process waiting on it must find the one this process holds
        if path.name == RUN_MARKER:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    write_atomically(run_dir / "config.yaml", lambda temporary: save_config(config, temporary))


# Held (flock) by the process that trains in the folder; the file itself stays when the lock is released.
LOCK_NAME = ".lock"

# Descriptors of the run-folder locks this process holds. An flock belongs to the open file description, which a
# fork shares: a DataLoader worker forked while the lock is held would hold it too, and after a kill -9 of the
# trainer keep it until the worker noticed and exited. So every forked child drops its copy at once: the
# descriptor is pointed at /dev/null (closing, never unlocking: LOCK_UN would release the parent's lock as well;
# and the number stays taken, so the inherited file object can never close someone else's file). Children that
# exec never get it: Python opens files close-on-exec.
_HELD_LOCKS: set[int] = set()


def _drop_inherited_locks() -> None:
    if not _HELD_LOCKS:
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for descriptor in _HELD_LOCKS:
            with contextlib.suppress(OSError):
                os.dup2(null, descriptor, inheritable=False)
    finally:
        os.close(null)
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on `run_dir` for the block: a second `seglab train` on the same folder (a resume, an
    overwrite) is refused instead of deleting the first one's files or writing checkpoints over them. The lock
    goes with the process: a kill or a crash releases it, and processes forked meanwhile (DataLoader workers) do
    not hold it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the folder is not locked
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "a process"
            raise ConfigError(f"run folder {run_dir} is in use: {holder} is training in it ({path} is locked). Wait "
                              "for it to finish or stop it (Ctrl+C saves and stops it), or give this run another "
                              "name with `--set name=...`") from None
        file.seek(0)
        file.truncate()
        file.write(f"seglab process {os.getpid()} on {socket.gethostname()}\n")
        file.flush()
        _HELD_LOCKS.add(file.fileno())
        try:
            yield
        finally:
            _HELD_LOCKS.discard(file.fileno())


def evaluate_best_on_test(config: TrainConfig, module: SegmentationLightningModule,
                          datamodule: SegmentationDataModule, best: Path, run_dir: Path, *,
                          on_scored: OnScored | None = None) -> CheckpointEvaluation:
    """Score `best` on the test split as `seglab evaluate` does; reports go to `<run>/evaluate/test/` and the
    scores to `<run>/test_metrics.json`. The best weights go into a copy of the trained network, so this also
    works for a model passed in by hand."""
    import copy

    model = copy.deepcopy(module.model).cpu()
    saved, identity = read_checkpoint_and_sha256(best)
    model.load_state_dict(model_state(saved, best))
    predictor = Predictor(model, module.spec, device=training_device(config), precision=run_precision(config),
                          batch_size=config.batch_size)
    result = evaluate_and_write(predictor, datamodule.datasets["test"], run_dir / "evaluate" / "test",
                                checkpoint=best, identity=identity, split="test", source="test split",
                                tile=config.eval_tile, on_scored=on_scored)
    copy_atomically(result.out / "metrics.json", run_dir / "test_metrics.json")
    return result


def resume(run_dir: str | Path, overrides: Sequence[str] = (), **options: Any) -> TrainResult:
    """Continue the run in `run_dir` from its last checkpoint with the config saved there.

    Overrides may change only the keys whose definition says "may change on --resume" (those that extend the
    run or say where it runs: `seglab train --help-config`); anything else would make the continuation a
    different experiment.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a seglab run folder (no config.yaml)")
    check_resume_overrides(pair.partition("=")[0] for pair in overrides)
    config = load_config(run_dir / "config.yaml", overrides)
    # The folder may have been moved or renamed since the run started.
    config = dataclasses.replace(config, runs_dir=str(run_dir.parent), name=run_dir.name)
    return train(config, resume=True, **options)
