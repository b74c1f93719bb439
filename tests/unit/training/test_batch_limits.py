"""`limit_train_batches` / `limit_val_batches`: an int is a number of batches, a float below 1 a share of the
epoch, as Lightning reads them; and the progress bar of a run without an epoch limit shows no epoch total."""

from __future__ import annotations

import pytest

from seglab.errors import ConfigError
from seglab.training.config import field_comments, load_config, make_config
from seglab.training.run import train
from training_helpers import TINY_MODEL, register_tiny_model

# 16 training images in batches of 4: four batches per epoch; 8 validation images: two batches.
TINY = {"dataset": "shapes", "image_size": 32, "train_length": 16, "val_length": 8, "batch_size": 4,
        "model": TINY_MODEL, "precision": "32-true", "progress_bar": False, "test_after_training": False}


def test_an_int_limit_stays_a_number_of_batches_and_a_share_stays_a_share():
    config = load_config(None, ["limit_train_batches=1", "limit_val_batches=1"])
    assert config.limit_train_batches == 1 and type(config.limit_train_batches) is int
    assert config.limit_val_batches == 1 and type(config.limit_val_batches) is int
    share = load_config(None, ["limit_train_batches=0.5"])
    assert share.limit_train_batches == 0.5 and type(share.limit_train_batches) is float
    with pytest.raises(ConfigError, match="limit_train_batches"):
        load_config(None, ["limit_train_batches=1.5"])  # neither a batch count nor a share
    with pytest.raises(ConfigError, match="limit_val_batches"):
        load_config(None, ["limit_val_batches=-1"])
    text = field_comments()["limit_train_batches"]
    assert "int" in text and "batches" in text and "share" in text


def test_limit_of_one_batch_trains_and_validates_on_one_batch(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    config = make_config({**TINY, "runs_dir": str(tmp_path), "name": "one", "max_epochs": 2,
                          "limit_train_batches": 1, "limit_val_batches": 1})
    result = train(config)
    assert result.trainer.global_step == 2  # one step per epoch, not the epoch's four
    assert result.trainer.num_val_batches == [1]


def test_a_run_without_an_epoch_limit_shows_no_epoch_total(tmp_path, monkeypatch, capfd):
    register_tiny_model(monkeypatch)
    config = make_config({**TINY, "runs_dir": str(tmp_path), "name": "steps", "max_epochs": None, "max_steps": 2,
                          "limit_train_batches": 1, "progress_bar": True})
    train(config)
    output = "".join(capfd.readouterr())
    assert "Epoch 1" in output
    assert "/-" not in output  # Lightning's rich bar wrote "Epoch 0/-2": max_epochs - 1 of an unlimited run
