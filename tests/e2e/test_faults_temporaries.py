"""Leftovers of killed writes: every temporary file seglab creates has one recognisable name
(`seglab.atomic.TEMPORARY_PATTERN`), a resume or an overwrite removes all of them from the run folder, and an
overwrite killed half way (config.yaml already deleted) can be run again."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
from test_training_faults import run_seglab_here, write_config

from seglab import atomic
from seglab.training.config import load_config
from seglab.training.run import LOCK_NAME, train
from training_helpers import register_tiny_model


def test_every_temporary_of_an_atomic_write_has_the_one_pattern(tmp_path):
    seen = []
    for name, suffix in (("last.ckpt", ""), ("grid.png", ".png"), ("metrics.csv", None)):
        with atomic.atomic_path(tmp_path / name, suffix=suffix) as temporary:
            seen.append(temporary)
            assert temporary.parent == tmp_path and temporary.match(atomic.TEMPORARY_PATTERN)
            assert not temporary.name.endswith(name)  # never taken for the target (*.ckpt, metrics.csv)
    assert seen[1].suffix == ".png"  # writers that read the format from the name still can
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grid.png", "last.ckpt", "metrics.csv"]


def leftovers_of_killed_writes(run_dir: Path) -> list[Path]:
    """Temporaries as writes killed mid-way (kill -9, power cut) leave them: a checkpoint, metrics.csv, a plot
    and an evaluation file, each half written."""
    planted = []
    for target, suffix in (("checkpoints/last.ckpt", ""), ("metrics.csv", ""), ("training_curves.png", ".png"),
                           ("evaluate/test/metrics.json", "")):
        temporary = atomic.temporary_name(run_dir / target, suffix)
        temporary.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(b"half a file")
        planted.append(temporary)
    return planted


def seglab_temporaries(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob(atomic.TEMPORARY_PATTERN))


def test_a_resume_removes_the_temporaries_of_every_killed_write_in_the_run_folder(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    run_seglab_here(["train", str(write_config(tmp_path, "left", max_epochs=1))])
    run_dir = tmp_path / "runs" / "left"
    planted = leftovers_of_killed_writes(run_dir)
    assert seglab_temporaries(run_dir) == sorted(planted)
    run_seglab_here(["train", "--resume", str(run_dir), "--set", "max_epochs=2"])
    assert seglab_temporaries(run_dir) == []
    assert atomic.remove_temporaries(run_dir) == []


def test_an_overwrite_killed_half_way_can_be_run_again(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    config = write_config(tmp_path, "again", max_epochs=1)
    run_seglab_here(["train", str(config)])
    run_dir = tmp_path / "runs" / "again"
    intact = tmp_path / "intact"
    shutil.copytree(run_dir, intact)
    entries = len([path for path in run_dir.iterdir() if path.name != LOCK_NAME])
    # The overwrite is killed after its k-th deletion, for every k: the folder must stay one that an overwrite
    # recognises as a seglab run folder (and so may empty), whatever is gone by then.
    for kill_after in range(1, entries):
        shutil.rmtree(run_dir)
        shutil.copytree(intact, run_dir)
        leftovers_of_killed_writes(run_dir)
        with interrupted_after_deletions(run_dir, kill_after), pytest.raises(KeyboardInterrupt):
            train(load_config(config), overwrite=True)
        train(load_config(config), overwrite=True)  # run again: completes
        assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert seglab_temporaries(run_dir) == [], kill_after


@contextlib.contextmanager
def interrupted_after_deletions(run_dir: Path, count: int):
    """A KeyboardInterrupt (standing in for the kill) right after the `count`-th deletion of an entry of
    `run_dir` itself (files through Path.unlink, folders through shutil.rmtree)."""
    unlink, rmtree = Path.unlink, shutil.rmtree
    done = []

    def counted(path: Path) -> None:
        if Path(path).parent == run_dir:
            done.append(Path(path).name)
            if len(done) == count:
                raise KeyboardInterrupt(f"killed after deleting {done}")

    def counting_unlink(self, *args, **kwargs):
        unlink(self, *args, **kwargs)
        counted(self)

    def counting_rmtree(path, *args, **kwargs):
        rmtree(path, *args, **kwargs)
        counted(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "unlink", counting_unlink)
        patch.setattr(shutil, "rmtree", counting_rmtree)
        yield
