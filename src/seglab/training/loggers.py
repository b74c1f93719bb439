"""Experiment trackers: Lightning's own loggers for TensorBoard, CSV files, MLflow and Weights & Biases.

`config.logger` names one or several. Lightning hands each of them the module's hyper-parameters when
training starts (after the run folder is prepared, on rank 0 only), the resolved config among them under
`config` (MLflow: `config/lr`, W&B: `config.lr`); TensorBoard gets no placeholder `hp_metric`.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from seglab.atomic import atomic_path
from seglab.errors import ConfigError

if TYPE_CHECKING:
    from seglab.training.config import TrainConfig


def _tensorboard(config: TrainConfig, run_dir: Path) -> Logger:
    return TensorBoardLogger(save_dir=run_dir, name="", version="tensorboard", default_hp_metric=False)


class _KeepingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it keeps the rows a run logged before it was resumed (Lightning's deletes
    an existing metrics.csv when it starts) and rewrites the file atomically when a new column appears (Lightning's
    rewrites it in place, so a full disk there would lose every row).

    Both are private hooks of Lightning's writer: no public one decides what happens to an existing file. The
    Lightning range pinned in pyproject.toml keeps them, and tests/unit/training/test_loggers.py checks the rows.
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="", encoding="utf-8") as file:
                # The header, in the order Lightning wrote it (sorted): appended rows must follow it.
                self.metrics_keys = next(csv.reader(file), [])

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            header = list(reader.fieldnames or [])
        try:
            with atomic_path(self.metrics_file_path, what="the CSV logger's metrics") as temporary, \
                    open(temporary, "w", newline="", encoding="utf-8") as file:
                writer = csv.DictWriter(file, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(rows)
        except BaseException:
            # save() has already taken the new columns into metrics_keys, but the file keeps its old header: rows
            # appended later (Lightning saves once more as training ends) must keep to it, or they outgrow it.
            self.metrics_keys = header
            raise


class _KeepingCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingExperimentWriter(log_dir=self.log_dir)
        # Set just above: Lightning types the field as fabric's base writer.
        assert isinstance(self._experiment, ExperimentWriter)
        return self._experiment


def _csv(config: TrainConfig, run_dir: Path) -> Logger:
    # <run>/csv/metrics.csv: every logged value, by step. <run>/metrics.csv is EpochHistory's, one row per epoch.
    return _KeepingCSVLogger(save_dir=run_dir, name="csv", version="")


def _mlflow(config: TrainConfig, run_dir: Path) -> Logger:
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        # One file store for all runs, to compare them (`mlflow ui --backend-store-uri runs/mlruns`). It is not
        # in the run folder because MLflow creates it with the logger, before train() checks the folder is new.
        tracking_uri = f"file:{(run_dir.parent / 'mlruns').resolve()}"
        # MLflow 3 refuses its file store unless asked; its recommended SQLite store needs SQLAlchemy, which
        # mlflow-skinny leaves out.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(experiment_name="seglab", run_name=config.name, tracking_uri=tracking_uri)


def _wandb(config: TrainConfig, run_dir: Path) -> Logger:
    # wandb reads WANDB_MODE (offline, disabled) and WANDB_API_KEY itself; its files go to <run>/wandb/.
    return WandbLogger(project=os.environ.get("WANDB_PROJECT") or "seglab", name=config.name, save_dir=run_dir)


LOGGERS: dict[str, Callable[[TrainConfig, Path], Logger]] = {
    "tensorboard": _tensorboard, "csv": _csv, "mlflow": _mlflow, "wandb": _wandb}
# Trackers whose package is not a dependency of seglab; each has a seglab extra of its own name.
_OPTIONAL = ("mlflow", "wandb")


def build_loggers(config: TrainConfig, run_dir: str | Path) -> list[Logger]:
    """The Lightning loggers `config.logger` names, writing under `run_dir`.

    Raises `ConfigError` naming the extra to install when a tracker's package is missing, before anything is
    created. The run folder is left alone until training starts: train() still has to check that it is new.
    """
    names = [config.logger] if isinstance(config.logger, str) else list(config.logger)
    for name in names:
        # Checked here rather than through Lightning's ModuleNotFoundError, whose hint names the `mlflow`
        # package (seglab installs mlflow-skinny) and no seglab extra.
        if name in _OPTIONAL and importlib.util.find_spec(name) is None:
            raise ConfigError(f"logger {name!r} needs the {name} package: pip install \"seglab[{name}]\"")
    return [LOGGERS[name](config, Path(run_dir)) for name in names]
