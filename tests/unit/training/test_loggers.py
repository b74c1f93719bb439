"""Experiment trackers (`logger:`): TensorBoard, CSV, MLflow and W&B through Lightning's loggers, on tiny runs."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from seglab.errors import ConfigError
from seglab.training.config import load_config, make_config, save_config
from seglab.training.loggers import LOGGERS, build_loggers
from seglab.training.run import train
from training_helpers import TinySegmenter

TINY = {
    "dataset": "shapes", "image_size": 32, "train_length": 16, "val_length": 8, "batch_size": 4,
    "model": "deeplabv3plus_xception41", "precision": "32-true", "progress_bar": False, "lr": 2e-3,
    "log_every_n_steps": 1, "max_epochs": 1, "test_after_training": False,
}
# The trackers see the config and the metrics, not the network: the runs below train `TinySegmenter` in place of
# the config's Xception-41 (which the logged config still names), at a fraction of its cost.


def tiny(tmp_path: Path, **overrides) -> object:
    return make_config({**TINY, "runs_dir": str(tmp_path), "name": "tiny", **overrides})


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.fixture
def mlflow_env(monkeypatch):
    """No tracking server in the environment. build_loggers sets MLFLOW_ALLOW_FILE_STORE for its local store:
    setting the variables first makes monkeypatch put back their original state afterwards."""
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)


def test_logger_names_are_validated(tmp_path):
    assert tiny(tmp_path).logger == "tensorboard"
    assert set(LOGGERS) == {"tensorboard", "csv", "mlflow", "wandb"}
    for name in LOGGERS:
        assert tiny(tmp_path, logger=name).logger == name
    config = load_config(None, ["logger=[tensorboard, csv, mlflow, wandb]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").logger == ["tensorboard", "csv", "mlflow", "wandb"]
    for bad in ("comet", "TensorBoard", [], ["csv", "csv"], ["csv", 3], ["csv", ["wandb"]], None, 1, {"csv": 1}):
        with pytest.raises(ConfigError, match="config key 'logger' must be one of tensorboard, csv, mlflow, wandb"):
            tiny(tmp_path, logger=bad)


def test_building_loggers_leaves_the_run_folder_alone(tmp_path, monkeypatch, mlflow_env):
    # train() refuses a run folder that is not empty, and checks only after the Trainer (with its loggers) exists.
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'seglab[mlflow]')")
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'seglab[wandb]')")
    loggers = build_loggers(tiny(tmp_path, logger=list(LOGGERS)), tmp_path / "tiny")
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    kinds = (TensorBoardLogger, CSVLogger, MLFlowLogger, WandbLogger)
    assert len(loggers) == len(kinds) and all(map(isinstance, loggers, kinds))
    assert loggers[0].log_dir == str(tmp_path / "tiny" / "tensorboard")
    assert Path(loggers[1].log_dir) == tmp_path / "tiny" / "csv"
    assert loggers[2].save_dir == str(tmp_path / "mlruns")  # MLflow creates its store right away, next to the runs
    assert loggers[3].save_dir == str(tmp_path / "tiny")
    assert list(tmp_path.iterdir()) == [tmp_path / "mlruns"]
    # A tracking server named in the environment wins over the local file store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'elsewhere'}")
    assert build_loggers(tiny(tmp_path, logger="mlflow"), tmp_path / "tiny")[0].save_dir == str(tmp_path / "elsewhere")


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_missing_tracker_package_names_the_extra(tmp_path, monkeypatch, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None if module == name else real(module, *a))
    with pytest.raises(ConfigError, match=rf'logger {name!r} needs the {name} package: pip install "seglab\[{name}\]"'):
        train(tiny(tmp_path, logger=["csv", name]))
    assert not (tmp_path / "tiny").exists()  # refused before training started


def test_tensorboard_and_csv(tmp_path):
    result = train(tiny(tmp_path, logger=["tensorboard", "csv"]), model=TinySegmenter())
    run = result.run_dir
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # Lightning's CSV file: every logged value by step, the validation metrics under their logged names.
    rows = _csv_rows(run / "csv" / "metrics.csv")
    validated = [row for row in rows if row.get("val/miou")]
    assert len(validated) == 1 and 0 <= float(validated[0]["val/miou"]) <= 1
    assert {"step", "epoch", "train/loss_step", "val/loss", "val/iou_circle"} <= set(rows[0])
    assert (run / "csv" / "hparams.yaml").is_file()
    # seglab's own metrics.csv at the top of the run folder keeps its layout: one row per epoch, epoch first.
    history = _csv_rows(run / "metrics.csv")
    assert list(history[0])[:6] == ["epoch", "step", "images_seen", "elapsed_s", "lr", "train_loss"]
    assert [row["epoch"] for row in history] == ["0"] and "val_miou" in history[0]
    assert float(validated[0]["val/miou"]) == pytest.approx(float(history[0]["val_miou"]))


def test_mlflow_file_store(tmp_path, mlflow_env):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'seglab[mlflow]')")
    from mlflow.tracking import MlflowClient

    result = train(tiny(tmp_path, logger="mlflow"), model=TinySegmenter())
    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    experiment = client.get_experiment_by_name("seglab")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.metrics["val/miou"] == pytest.approx(result.best_miou)
    assert {"train/loss_epoch", "val/pixel_accuracy", "val/iou_square"} <= set(run.data.metrics)
    # Lightning logs the module's hyper-parameters: the resolved config under config/, and the class names.
    assert float(run.data.params["config/lr"]) == pytest.approx(2e-3)
    assert run.data.params["config/model"] == "deeplabv3plus_xception41"
    assert "circle" in run.data.params["class_names"]


def _wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's `.wandb` file (what `wandb sync` uploads): a LevelDB log in
    32 KiB blocks of 7-byte-headed fragments, after a 7-byte W&B header. Recent wandb versions write no
    `files/wandb-summary.json` or `files/config.yaml` offline, so the log is the record of the run."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, offset = [], b"", 7
    while offset + 7 <= len(data):
        space = 32768 - offset % 32768
        if space < 7:  # block trailer padding
            offset += space
            continue
        length, kind = int.from_bytes(data[offset + 4:offset + 6], "little"), data[offset + 6]
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'seglab[wandb]')")
    for variable, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / "wandb"),
                            "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                            "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
                            "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    try:
        result = train(tiny(tmp_path, logger="wandb"), model=TinySegmenter())
    finally:
        wandb.finish()  # Lightning leaves the run open (it would end with the process)
    [folder] = (result.run_dir / "wandb").glob("offline-run-*")
    records = _wandb_records(next(folder.glob("run-*.wandb")))
    [run] = [record.run for record in records if record.HasField("run")]
    assert run.project == "seglab" and run.display_name == "tiny"
    # wandb-core fills nested_key (a one-element path) where older versions filled key.
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
               for record in records if record.HasField("history")]
    assert [row["val/miou"] for row in history if "val/miou" in row] == [pytest.approx(result.best_miou)]
    config = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for record in records
              if record.HasField("config") for item in record.config.update}
    assert config["config"]["lr"] == pytest.approx(2e-3) and config["class_names"][1] == "circle"


def test_a_resumed_run_keeps_the_csv_rows_it_logged_before(tmp_path):
    # Lightning's CSV writer deletes an existing metrics.csv when it starts, so a resume used to keep only the
    # resumed epochs' rows.
    first = train(tiny(tmp_path, logger="csv", max_epochs=1), model=TinySegmenter())
    rows_before = _csv_rows(first.run_dir / "csv" / "metrics.csv")
    assert rows_before and {row["epoch"] for row in rows_before} == {"0"}
    train(tiny(tmp_path, logger="csv", max_epochs=2), resume=True, model=TinySegmenter())
    rows_after = _csv_rows(first.run_dir / "csv" / "metrics.csv")
    assert {row["epoch"] for row in rows_after} == {"0", "1"}
    assert [row for row in rows_after if row["epoch"] == "0"] == rows_before
