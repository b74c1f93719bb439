"""`seglab demo` never empties a folder it did not make: a non-empty `runs/demo` that no demo wrote is refused
unless `--overwrite` is given, and seglab knows its run folders by the marker file it writes into them (with its
version), not by a common file name such as config.yaml. Run folders of an older seglab (config.yaml and
checkpoints/, no marker) stay resumable and replaceable."""

from __future__ import annotations

import json

import pytest
from test_training_faults import run_seglab_here, write_config

from seglab.cli import main
from seglab.errors import ConfigError
from seglab.training import run
from seglab.training.config import load_config
from seglab.training.run import train
from seglab.version import __version__
from training_helpers import register_tiny_model

# The demo with the tiny model on 32 px images: a few seconds.
TINY_DEMO = ["--minutes", "1", "--set", "model=tiny_test", "image_size=32", "batch_size=4", "train_length=8",
             "limit_train_batches=2", "val_length=4", "max_epochs=1", "precision=32-true", "progress_bar=false",
             "progressive_resize=null", "output_stride=null", "zero_init_residual=false"]


def demo(runs, *extra: str) -> int:
    return main(["demo", "--runs-dir", str(runs), *TINY_DEMO, *extra])


def test_the_demo_refuses_a_folder_it_did_not_make_and_touches_nothing_in_it(tmp_path, monkeypatch, capsys):
    register_tiny_model(monkeypatch)
    folder = tmp_path / "demo"
    folder.mkdir()
    # A user's folder that happens to hold a config.yaml (what seglab used to take for a run folder).
    (folder / "config.yaml").write_text("my: own settings\n")
    (folder / "notes.txt").write_text("a week of notes\n")
    assert demo(tmp_path) == 2
    message = capsys.readouterr().err
    assert f"seglab: error: {folder} already exists and was not made by `seglab demo`" in message
    assert "not a seglab run folder" in message and "Traceback" not in message
    assert sorted(path.name for path in folder.iterdir()) == ["config.yaml", "notes.txt"]
    assert (folder / "notes.txt").read_text() == "a week of notes\n"
    # --overwrite does not make a folder that is no seglab run folder one: it is still refused, untouched.
    assert demo(tmp_path, "--overwrite") == 2
    assert "not a seglab run folder, so it is never emptied" in capsys.readouterr().err
    assert sorted(path.name for path in folder.iterdir()) == ["config.yaml", "notes.txt"]


def test_the_demo_reruns_over_its_own_folder_and_replaces_another_run_only_with_overwrite(tmp_path, monkeypatch,
                                                                                          capsys):
    register_tiny_model(monkeypatch)
    assert demo(tmp_path) == 0
    marker = json.loads((tmp_path / "demo" / run.RUN_MARKER).read_text())
    assert marker == {"seglab_version": __version__, "created_by": "seglab demo"}
    assert demo(tmp_path) == 0  # its own folder: replaced without asking, as before
    # A run that `seglab train` made under the name "demo": refused, then replaced with --overwrite.
    train(load_config(write_config(tmp_path, "demo", runs_dir=str(tmp_path), max_epochs=1)), overwrite=True)
    assert json.loads((tmp_path / "demo" / run.RUN_MARKER).read_text())["created_by"] == "seglab train"
    capsys.readouterr()
    assert demo(tmp_path) == 2
    assert "was not made by `seglab demo`; it is another seglab run: pass --overwrite" in capsys.readouterr().err
    assert demo(tmp_path, "--overwrite") == 0
    assert json.loads((tmp_path / "demo" / run.RUN_MARKER).read_text())["created_by"] == "seglab demo"


def test_a_run_folder_of_an_older_seglab_without_the_marker_resumes_and_is_replaced_with_overwrite(
        tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    config = write_config(tmp_path, "old", max_epochs=1)
    run_seglab_here(["train", str(config)])
    run_dir = tmp_path / "runs" / "old"
    (run_dir / run.RUN_MARKER).unlink()  # as an older seglab left it: config.yaml and checkpoints/, no marker
    run_seglab_here(["train", "--resume", str(run_dir), "--set", "max_epochs=2"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    train(load_config(config), overwrite=True)
    assert json.loads((run_dir / run.RUN_MARKER).read_text())["created_by"] == "seglab train"
    # config.yaml alone (no marker, no checkpoints/) is not a run folder: never emptied, even with overwrite.
    mine = tmp_path / "runs" / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: own settings\n")
    with pytest.raises(ConfigError, match="is not a seglab run folder"):
        train(load_config(config, ["name=mine"]), overwrite=True)
    assert (mine / "config.yaml").read_text() == "my: own settings\n"
