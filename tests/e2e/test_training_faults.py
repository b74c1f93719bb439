"""Faults: `seglab train` killed with SIGKILL at exact moments, stopped by SIGINT/SIGTERM or by its time budget,
full disks and unwritable folders under checkpoints and predictions; and CPU determinism.

The trainings that get a signal run the real command line in a subprocess (`tests/training_helpers.py`, with a
tiny model) and pause at a named moment through `seglab.training.pause_points`, so each signal lands where the
test says; the reference run and the resumes run the same command line in this process.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Callback
from PIL import Image

from data_fixtures import TESTS_DIR
from seglab import atomic
from seglab.cli import main
from seglab.errors import ConfigError, OutputError
from seglab.training import checkpoints
from seglab.training.checkpoints import TEMPORARY_PATTERN, save_atomically
from seglab.training.config import make_config
from seglab.training.pause_points import MARKER_VARIABLE, PAUSE_AT_VARIABLE
from seglab.training.run import resume, train
from training_helpers import (
    PAUSE_LOADING_VARIABLE,
    TINY_MODEL,
    TinySegmenter,
    assert_same_metrics,
    assert_same_weights,
    logged_metrics,
    register_tiny_model,
)

HELPERS = TESTS_DIR / "training_helpers.py"

# 3 epochs of 2 steps (8 images, batch 4) and one validation batch each: epoch 0 leaves a last.ckpt to resume
# from, and every fault below lands in epoch 1.
FAULT_RUN = {
    "dataset": "shapes", "image_size": 32, "train_length": 8, "val_length": 4, "batch_size": 4,
    "model": TINY_MODEL, "precision": "32-true", "progress_bar": False, "lr": 1e-2, "scheduler": "cosine",
    "max_epochs": 3, "logger": "csv", "log_every_n_steps": 1, "test_after_training": False,
}
STEPS_PER_EPOCH = 2


def write_config(folder: Path, name: str, **options) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**FAULT_RUN, "name": name, "runs_dir": str(folder / "runs"), **options}))
    return path


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left_paused():
    """A test that fails before its signal would leave its subprocess paused for good: kill it."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # with its DataLoader workers
            process.wait()


def start_seglab(args: list[str], cwd: Path, pause_at: str | None = None, **env_options: str) -> subprocess.Popen:
    """`seglab ARGS` (with the tiny model) in a subprocess, leading its own process group (`os.killpg` signals
    it and its DataLoader workers, not pytest); stdout and stderr go to files in `cwd`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", MARKER_VARIABLE: str(cwd / "paused"), **env_options}
    env.pop(PAUSE_AT_VARIABLE, None)
    if pause_at is not None:
        env[PAUSE_AT_VARIABLE] = pause_at
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        process = subprocess.Popen([sys.executable, str(HELPERS), *args], cwd=cwd, env=env, stdout=out,
                                   stderr=err, start_new_session=True)
    _STARTED.append(process)
    return process


def finish(process: subprocess.Popen, cwd: Path, timeout: float = 120) -> str:
    """Waits for `process`; returns its stderr."""
    process.wait(timeout=timeout)
    return (cwd / "stderr.txt").read_text()


def run_seglab_here(args: list[str]) -> None:
    """`seglab ARGS` in this process (a subprocess would spend seconds importing): resumes and the reference run.
    Needs `tiny_test` registered. One thread, as the subprocesses run: float sums split over another number of
    threads round differently, and the runs are compared to 1e-6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)


def wait_until_paused(process: subprocess.Popen, cwd: Path, timeout: float = 90) -> str:
    """Waits until the process reports it paused at its moment; returns the report."""
    marker = cwd / "paused"
    deadline = time.monotonic() + timeout
    while not marker.is_file():
        if process.poll() is not None:
            pytest.fail(f"seglab exited ({process.returncode}) before its pause:\n{finish(process, cwd)[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"seglab did not reach its pause in {timeout} s")
        time.sleep(0.05)
    return marker.read_text()


def checkpoint_files(run_dir: Path) -> dict[str, dict]:
    """Every *.ckpt in the run, loaded as seglab loads them (weights_only=True): a half-written or corrupt
    file fails here."""
    found = {}
    for path in sorted((run_dir / "checkpoints").glob("*.ckpt")):
        found[path.name] = torch.load(path, weights_only=True, map_location="cpu")
        assert found[path.name]["state_dict"], path
    return found


def temporaries(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob(TEMPORARY_PATTERN))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted run that every interrupted-and-resumed run must end like."""
    folder = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as monkeypatch:
        register_tiny_model(monkeypatch)
        run_seglab_here(["train", str(write_config(folder, "straight"))])
    return folder / "runs" / "straight"


@pytest.mark.parametrize("moment", ["train_step@4", "validation@2", "checkpoint_write:last.ckpt@2"],
                         ids=["during-a-step", "during-validation", "during-a-checkpoint-write"])
def test_kill_9_then_resume_ends_like_an_uninterrupted_run(reference_run, tmp_path, monkeypatch, moment):
    run_dir = tmp_path / "runs" / "killed"
    process = start_seglab(["train", str(write_config(tmp_path, "killed"))], tmp_path, pause_at=moment)
    assert wait_until_paused(process, tmp_path).startswith(moment)
    process.send_signal(signal.SIGKILL)
    finish(process, tmp_path)
    assert process.returncode == -signal.SIGKILL
    # Every checkpoint on disk is whole; last.ckpt is still the one written after epoch 0.
    on_disk = checkpoint_files(run_dir)
    assert "last.ckpt" in on_disk and on_disk["last.ckpt"]["global_step"] == STEPS_PER_EPOCH
    if moment.startswith("checkpoint_write"):
        # The kill landed inside the write: the new bytes sit in a temporary file that is not a *.ckpt.
        assert len(temporaries(run_dir)) == 1 and temporaries(run_dir)[0].stat().st_size > 0

    register_tiny_model(monkeypatch)
    run_seglab_here(["train", "--resume", str(run_dir)])

    assert temporaries(run_dir) == []
    resumed, reference = checkpoint_files(run_dir), checkpoint_files(reference_run)
    assert set(resumed) == set(reference) == {"best.ckpt", "last.ckpt"}
    for name in reference:
        assert_same_weights(resumed[name]["state_dict"], reference[name]["state_dict"])
    assert resumed["last.ckpt"]["global_step"] == 3 * STEPS_PER_EPOCH
    assert_same_metrics(logged_metrics(run_dir), logged_metrics(reference_run))


def stop_with(signum: signal.Signals, folder: Path) -> tuple[Path, str]:
    """Sends `signum` to `seglab train` inside a step, checks it stops cleanly with a resumable last.ckpt at
    that step and says how to resume; returns the run folder and the printed resume command."""
    run_dir = folder / "runs" / "stopped"
    # Step 3 is epoch 1's first: the signal arrives between its forward and backward pass.
    process = start_seglab(["train", str(write_config(folder, "stopped"))], folder, pause_at="train_step@3")
    wait_until_paused(process, folder)
    process.send_signal(signum)
    stderr = finish(process, folder)
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr
    command = f"seglab train --resume {shlex.quote(str(run_dir))}"
    assert f"training stopped by {signum.name} in epoch 1 after step 3; saved " in stderr
    assert stderr.rstrip().endswith(f"Resume with: {command}"), stderr[-1000:]
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == 3  # the interrupted step was saved, not lost
    assert temporaries(run_dir) == []
    return run_dir, command


def test_sigint_saves_a_resumable_checkpoint_and_says_how_to_resume(tmp_path):
    stop_with(signal.SIGINT, tmp_path)


def test_sigterm_saves_a_resumable_checkpoint_and_the_printed_resume_command_completes_the_run(tmp_path,
                                                                                               monkeypatch):
    run_dir, command = stop_with(signal.SIGTERM, tmp_path)
    register_tiny_model(monkeypatch)
    program, *args = shlex.split(command)
    assert program == "seglab"
    run_seglab_here(args)  # the printed command
    finished = checkpoint_files(run_dir)["last.ckpt"]
    assert finished["global_step"] == 3 * STEPS_PER_EPOCH and finished["epoch"] == 2
    rows = logged_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert [row["images_seen"] for row in rows] == [8, 16, 24]  # the images of the interrupted step count


def send(process: subprocess.Popen, signum: signal.Signals, *, to_group: bool) -> None:
    """`signum` to the process alone (`kill PID`) or to its whole group, DataLoader workers included (what
    Ctrl+C in a terminal, `timeout` and SLURM do)."""
    if to_group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)


# (where the signal lands, which, to the group?, num_workers, the step last.ckpt is saved at)
SIGNAL_CASES = {
    "step-sigterm-group-1-worker": ("train_step@3", signal.SIGTERM, True, 1, 3),
    "waiting-for-a-batch-sigint-group-2-workers": ("loading", signal.SIGINT, True, 2, 3),
    "validation-sigint-group-2-workers": ("validation@2", signal.SIGINT, True, 2, 4),
    "checkpoint-write-sigterm-main-2-workers": ("checkpoint_write:last.ckpt@2", signal.SIGTERM, False, 2, 4),
    "last-epoch-validation-sigterm-main": ("validation@3", signal.SIGTERM, False, 0, 6),
}


@pytest.mark.parametrize("case", list(SIGNAL_CASES))
def test_a_signal_with_loader_workers_stops_cleanly_at_the_next_safe_point_and_resumes(tmp_path, monkeypatch,
                                                                                       case):
    moment, signum, to_group, workers, step = SIGNAL_CASES[case]
    run_dir = tmp_path / "runs" / "stopped"
    config = write_config(tmp_path, "stopped", num_workers=workers)
    if moment == "loading":  # each worker's 5th item: the first batch of epoch 1, which the main process awaits
        process = start_seglab(["train", str(config)], tmp_path, **{PAUSE_LOADING_VARIABLE: "5"})
    else:
        process = start_seglab(["train", str(config)], tmp_path, pause_at=moment)
    wait_until_paused(process, tmp_path)
    send(process, signum, to_group=to_group)
    if moment == "loading":
        time.sleep(0.5)  # the main process handles the signal while it waits; then the workers go on
        (tmp_path / "paused.go").touch()
    stderr = finish(process, tmp_path)
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "exited unexpectedly" not in stderr
    epoch = (step - 1) // STEPS_PER_EPOCH
    assert f"training stopped by {signum.name} in epoch {epoch} after step {step}; saved " in stderr
    assert stderr.rstrip().endswith(f"Resume with: seglab train --resume {run_dir}"), stderr[-1000:]
    # Stopped at the next safe point: no training step after a validation or a checkpoint write.
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == step
    assert [row["epoch"] for row in logged_metrics(run_dir)] == list(range(step // STEPS_PER_EPOCH))
    assert temporaries(run_dir) == []
    if moment.startswith("validation"):  # the acceptance check: --resume finishes the run
        register_tiny_model(monkeypatch)
        run_seglab_here(["train", "--resume", str(run_dir)])
        assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == 3 * STEPS_PER_EPOCH
        assert [row["epoch"] for row in logged_metrics(run_dir)] == [0, 1, 2]


def ctrl_c_twice(config: Path, folder: Path, first: str, second: str) -> str:
    """`seglab train CONFIG` gets Ctrl+C (to its process group) at the pause `first`, again at `second`; checks it
    ends with exit code 130 and no traceback; returns its stderr."""
    process = start_seglab(["train", str(config)], folder, pause_at=f"{first},{second}")
    assert wait_until_paused(process, folder).startswith(first)
    (folder / "paused").unlink()
    os.killpg(process.pid, signal.SIGINT)
    assert wait_until_paused(process, folder).startswith(second)
    os.killpg(process.pid, signal.SIGINT)
    stderr = finish(process, folder)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    return stderr


def test_a_second_ctrl_c_during_the_save_finishes_the_save_and_ends_with_seglabs_message(tmp_path):
    run_dir = tmp_path / "runs" / "twice"
    # The first Ctrl+C lands in step 3; the second in the write of last.ckpt that it causes (epoch 0's
    # checkpoint was the first write of last.ckpt).
    stderr = ctrl_c_twice(write_config(tmp_path, "twice", num_workers=1), tmp_path, "train_step@3",
                          "checkpoint_write:last.ckpt@2")
    assert "SIGINT again: stopping as soon as the file being written is complete" in stderr
    assert "training stopped by SIGINT in epoch 1 after step 3; saved " in stderr
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == 3  # whole, and the one the save was writing
    assert temporaries(run_dir) == []


def test_a_second_ctrl_c_outside_a_write_stops_at_once_with_seglabs_message_and_keeps_the_last_checkpoint(
        tmp_path):
    run_dir = tmp_path / "runs" / "twice"
    # Two validation batches per epoch: both Ctrl+C land in epoch 1's validation, before its checkpoints.
    stderr = ctrl_c_twice(write_config(tmp_path, "twice", num_workers=1, val_length=8), tmp_path, "validation@3",
                          "validation@4")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (f"training stopped at once by a second SIGINT in epoch 1 at step 4; the last complete checkpoint, "
            f"{last}, is intact. Resume with: seglab train --resume {run_dir}") in stderr
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == STEPS_PER_EPOCH  # epoch 0's, whole
    assert temporaries(run_dir) == []


class FakeClock:
    """Stands in for `time` in Lightning's Timer: one "second" passes at the start of every training step."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class TickAndRecord(Callback):
    """Advances the fake clock by a second per step; records where each step is and the weights at the start."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.steps: list[tuple[int, int, int]] = []  # (epoch, batch in epoch, global step before it)
        self.start_weights: dict[str, torch.Tensor] | None = None

    def on_train_start(self, trainer, pl_module):
        self.start_weights = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.clock.now += 1.0
        self.steps.append((trainer.current_epoch, batch_idx, trainer.global_step))


def test_a_run_stopped_by_max_minutes_mid_epoch_resumes_from_its_last_validation(tmp_path, monkeypatch):
    import lightning.pytorch.callbacks.timer as timer

    register_tiny_model(monkeypatch)
    clock = FakeClock()
    monkeypatch.setattr(timer, "time", clock)
    # A 3-"second" budget over epochs of 4 steps: the clock stops the run after step 3, mid-epoch.
    options = {**FAULT_RUN, "train_length": 16, "max_epochs": None, "max_minutes": 3 / 60}
    first = TickAndRecord(clock)
    stopped = train(make_config(options, runs_dir=str(tmp_path), name="budget"), model=TinySegmenter(),
                    extra_callbacks=[first])
    assert [step for _, _, step in first.steps] == [0, 1, 2]
    # README: the stop validates and checkpoints there, mid-epoch.
    assert [(row["epoch"], row["step"]) for row in stopped.history] == [(0, 3)]
    saved = torch.load(tmp_path / "budget" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 3)

    # The budget counts the time already trained: raising it to 6 "seconds" buys 3 more steps.
    second = TickAndRecord(clock)
    resumed = resume(tmp_path / "budget", ["max_minutes=0.1"], model=TinySegmenter(), extra_callbacks=[second])
    # README: resuming continues from the last validation (its weights and step count) at the next epoch.
    assert_same_weights(second.start_weights, {k.removeprefix("model."): v for k, v in saved["state_dict"].items()
                                               if k.startswith("model.")})
    assert second.steps == [(1, 0, 3), (1, 1, 4), (1, 2, 5)]
    assert [(row["epoch"], row["step"]) for row in resumed.history] == [(0, 3), (1, 6)]
    assert logged_metrics(tmp_path / "budget")[0] == pytest.approx(
        {k: v for k, v in stopped.history[0].items() if k != "elapsed_s"})


def test_a_budget_that_ends_between_validating_epochs_still_validates_its_last_weights(tmp_path, monkeypatch):
    import lightning.pytorch.callbacks.timer as timer

    register_tiny_model(monkeypatch)
    clock = FakeClock()
    monkeypatch.setattr(timer, "time", clock)
    # Validation every 3rd epoch of 4 steps; the 6-"second" budget ends in epoch 1, which would not validate.
    options = {**FAULT_RUN, "train_length": 16, "max_epochs": None, "max_minutes": 6 / 60, "val_every_n_epochs": 3}
    stopped = train(make_config(options, runs_dir=str(tmp_path), name="budget"), model=TinySegmenter(),
                    extra_callbacks=[TickAndRecord(clock)])
    assert [(row["epoch"], row["step"]) for row in stopped.history] == [(1, 6)]
    assert stopped.best_checkpoint is not None and stopped.best_checkpoint.is_file()


def test_same_config_and_seed_give_identical_runs_on_a_cpu(tmp_path, monkeypatch):
    register_tiny_model(monkeypatch)
    # Augmentation and dropout draw random numbers; the weights are initialised inside `train`, after seeding.
    options = {**FAULT_RUN, "augment": True, "max_epochs": 2}
    runs = [train(make_config(options, runs_dir=str(tmp_path), name=name)) for name in ("first", "second")]
    first, second = (logged_metrics(tmp_path / name) for name in ("first", "second"))
    assert len(first) == 2 and first == second  # every logged metric exactly equal, not approximately
    for (name, a), b in zip(runs[0].module.state_dict().items(), runs[1].module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # Another seed gives another run, so the equality above is not the equality of constants.
    train(make_config({**options, "max_epochs": 1, "seed": 1}, runs_dir=str(tmp_path), name="other"))
    assert logged_metrics(tmp_path / "other")[0]["train_loss"] != first[0]["train_loss"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_disk_during_a_checkpoint_write_stops_training_with_the_file_and_the_cause(
        tmp_path, monkeypatch, capsys):
    register_tiny_model(monkeypatch)
    config = tmp_path / "disk.yaml"
    config.write_text(yaml.safe_dump({**FAULT_RUN, "max_epochs": 1, "name": "disk", "runs_dir": str(tmp_path)}))
    assert main(["train", str(config)]) == 0
    folder = tmp_path / "disk" / "checkpoints"
    before = {path.name: sha256(path) for path in folder.glob("*.ckpt")}
    assert set(before) == {"best.ckpt", "last.ckpt"}

    def disk_full(obj, file, *args, **kwargs):
        file.write(b"the first bytes of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoints.torch, "save", disk_full)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "disk"), "--set", "max_epochs=2"]) == 2
    message = capsys.readouterr().err
    assert "Traceback" not in message
    assert f"seglab: error: cannot write checkpoint {folder}{os.sep}" in message
    assert "No space left on device (ENOSPC)" in message and "is unchanged" in message
    monkeypatch.undo()
    after = {path.name: sha256(path) for path in folder.glob("*.ckpt")}
    assert after == before  # the previous checkpoints, byte for byte
    assert checkpoint_files(tmp_path / "disk")["last.ckpt"]["global_step"] == STEPS_PER_EPOCH
    assert temporaries(tmp_path / "disk") == []


@pytest.mark.parametrize("failure", ["full-disk-mid-write", "unwritable-folder"])
def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, failure):
    path = tmp_path / "checkpoints" / "last.ckpt"
    save_atomically({"epoch": 1, "weights": torch.ones(3)}, path)
    before = path.read_bytes()
    if failure == "full-disk-mid-write":
        def fail(obj, file, *args, **kwargs):
            file.write(b"partial checkpoint bytes")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(checkpoints.torch, "save", fail)
        cause = "No space left on device (ENOSPC)"
    else:
        def fail(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(atomic, "open", fail, raising=False)  # the temporary file cannot be created
        cause = "Permission denied (EACCES)"
    with pytest.raises(OutputError) as raised:
        save_atomically({"epoch": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert f"cannot write checkpoint {path}: {cause}; the previous last.ckpt is unchanged" in str(raised.value)
    assert path.read_bytes() == before and torch.load(path, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind


@pytest.fixture()
def three_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
    return folder


@pytest.fixture()
def small_disk(tmp_path) -> Path:
    """A real 8 MiB file system (tmpfs) for the test's files: filled up (`fill_disk`), it fails writes with the
    kernel's own ENOSPC, so seglab's real writers meet a real full disk. Mounting needs root (CI runs as root)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "seglab-test", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill_disk(folder: Path) -> Path:
    """Fills the file system of `folder` to the last byte with one file; returns it (delete it to free the disk)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as file:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    file.write(b"\0" * chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


def test_a_full_disk_during_prediction_names_the_file_and_leaves_no_partial_mask(
        reference_run, three_images, small_disk, monkeypatch, capsys):
    import seglab.inference.files as files

    register_tiny_model(monkeypatch)
    real_writer = files.save_mask_png

    def disk_fills_after_one(mask, path, palette):
        if Path(path).name != "img0.png":
            fill_disk(small_disk)  # the disk is full from the second mask on: the real writer meets it
        real_writer(mask, path, palette)

    monkeypatch.setattr(files, "save_mask_png", disk_fills_after_one)
    out = small_disk / "out"
    code = main(["predict", str(reference_run / "checkpoints" / "best.ckpt"), str(three_images), "--out", str(out),
                 "--no-progress", "--precision", "fp32"])
    message = capsys.readouterr().err
    assert code == 2 and "Traceback" not in message
    assert (f"seglab: error: cannot write {out / 'img1.png'}: No space left on device (ENOSPC); 1 image(s) were "
            "predicted and written before it") in message
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "seglab-predict.json"]  # no half-written img1.png
    assert np.asarray(Image.open(out / "img0.png")).shape == (32, 32)


def test_an_unwritable_prediction_folder_is_named_with_the_cause(reference_run, three_images, tmp_path,
                                                                 monkeypatch, capsys):
    register_tiny_model(monkeypatch)
    out = tmp_path / "readonly" / "out"
    original_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        original_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    code = main(["predict", str(reference_run / "checkpoints" / "best.ckpt"), str(three_images), "--out", str(out),
                 "--no-progress"])
    message = capsys.readouterr().err
    assert code == 2 and "Traceback" not in message
    assert f"seglab: error: cannot write {out}: Permission denied (EACCES); 0 image(s) were predicted" in message


def _fill_disk_after(file, data: bytes = b"the first bytes") -> None:
    """What a write does on a full disk: some bytes land, then ENOSPC."""
    if isinstance(file, (str, os.PathLike)):
        Path(file).write_bytes(data)
    else:
        file.write(data.decode() if isinstance(file, io.TextIOBase) else data)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _disk_full_for(monkeypatch, name: str, run_dir: Path) -> None:
    """ENOSPC in the middle of writing `run_dir/name`, at the call that writes its content (the same call
    whatever file the content goes to: the file itself or a temporary one beside it)."""
    import csv

    import matplotlib.figure
    from PIL import Image as PILImage

    if name == "metrics.csv":
        original_writerows, original = csv.DictWriter.writerows, csv.DictWriter.__init__

        def writerows(self, rows):
            if Path(self.writer_file.name).parent != run_dir:  # Lightning's CSVLogger writes csv/metrics.csv
                return original_writerows(self, rows)
            return _fill_disk_after(self.writer_file)

        monkeypatch.setattr(csv.DictWriter, "writerows", writerows)

        def remember_file(self, file, *args, **kwargs):
            original(self, file, *args, **kwargs)
            self.writer_file = file

        monkeypatch.setattr(csv.DictWriter, "__init__", remember_file)
    elif name == "training_curves.png":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, path, **kw: _fill_disk_after(path))
    elif name == "val_samples.png":
        original_save = PILImage.Image.save

        def save(self, fp, *args, **kwargs):
            if "val_samples" not in str(fp):
                return original_save(self, fp, *args, **kwargs)
            return _fill_disk_after(fp, b"\x89PNG half")

        monkeypatch.setattr(PILImage.Image, "save", save)
    else:
        original_write_text = Path.write_text

        def write_text(self, text, *args, **kwargs):
            if name not in self.name:
                return original_write_text(self, text, *args, **kwargs)
            return _fill_disk_after(self, text[:20].encode())

        monkeypatch.setattr(Path, "write_text", write_text)


def hidden_temporaries(run_dir: Path) -> list[Path]:
    return sorted(path for path in run_dir.rglob(".*") if ".tmp" in path.name)


@pytest.mark.parametrize("name", ["metrics.csv", "training_curves.png", "val_samples.png"])
def test_a_full_disk_while_writing_a_run_file_names_it_and_keeps_the_previous_one(reference_run, tmp_path,
                                                                                  monkeypatch, capsys, name):
    import shutil

    register_tiny_model(monkeypatch)
    run_dir = tmp_path / "full"
    shutil.copytree(reference_run, run_dir)
    before = {path.name: sha256(path) for path in run_dir.iterdir() if path.is_file()}
    _disk_full_for(monkeypatch, name, run_dir)
    capsys.readouterr()
    code = main(["train", "--resume", str(run_dir), "--set", "max_epochs=4"])
    message = capsys.readouterr().err
    monkeypatch.undo()
    assert code == 2 and "Traceback" not in message, message[-3000:]
    assert f"seglab: error: cannot write {run_dir / name}: No space left on device (ENOSPC); the previous {name} " \
           "is unchanged. The disk holding" in message
    assert " free" in message and f"seglab train --resume {run_dir}" in message
    assert sha256(run_dir / name) == before[name]  # the previous file, byte for byte: no half-written one
    assert hidden_temporaries(run_dir) == []
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] >= 3 * STEPS_PER_EPOCH


def test_a_full_disk_while_writing_config_yaml_leaves_no_half_written_file(tmp_path, monkeypatch, capsys):
    register_tiny_model(monkeypatch)
    run_dir = tmp_path / "runs" / "nospace"
    _disk_full_for(monkeypatch, "config.yaml", run_dir)
    code = main(["train", str(write_config(tmp_path, "nospace"))])
    message = capsys.readouterr().err
    monkeypatch.undo()
    assert code == 2 and "Traceback" not in message, message[-3000:]
    assert (f"seglab: error: cannot write {run_dir / 'config.yaml'}: No space left on device (ENOSPC); no "
            "config.yaml was written") in message
    assert not (run_dir / "config.yaml").exists() and hidden_temporaries(run_dir) == []


def test_a_run_folder_in_use_is_refused_to_a_second_resume_or_overwrite_and_its_temporaries_survive(
        tmp_path, monkeypatch, capsys):
    register_tiny_model(monkeypatch)
    run_dir = tmp_path / "runs" / "busy"
    config = write_config(tmp_path, "busy")
    # The first process is inside a checkpoint write: its temporary file is on disk.
    first = start_seglab(["train", str(config)], tmp_path, pause_at="checkpoint_write:last.ckpt@2")
    wait_until_paused(first, tmp_path)
    [temporary] = temporaries(run_dir)
    last = sha256(run_dir / "checkpoints" / "last.ckpt")

    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    message = capsys.readouterr().err
    assert f"seglab: error: run folder {run_dir} is in use: seglab process {first.pid} on " in message
    assert "Traceback" not in message
    with pytest.raises(ConfigError, match="is in use"):
        train(make_config({**FAULT_RUN}, runs_dir=str(tmp_path / "runs"), name="busy"), overwrite=True)
    assert temporaries(run_dir) == [temporary] and (run_dir / ".lock").is_file()
    assert sha256(run_dir / "checkpoints" / "last.ckpt") == last and (run_dir / "config.yaml").is_file()

    os.killpg(first.pid, signal.SIGKILL)  # the lock goes with the process: the resume may go ahead now
    first.wait()
    run_seglab_here(["train", "--resume", str(run_dir)])
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == 3 * STEPS_PER_EPOCH


def test_a_full_disk_while_writing_test_metrics_json_names_it_and_leaves_no_half_written_file(
        small_disk, monkeypatch, capsys):
    from seglab.training import run

    register_tiny_model(monkeypatch)
    config = write_config(small_disk, "tested", max_epochs=1, test_after_training=True, runs_dir=str(small_disk))
    run_dir = small_disk / "tested"
    real_copy = run.copy_atomically

    def disk_full_then_copy(source, path, **options):
        if Path(path).name == "test_metrics.json":
            fill_disk(small_disk)  # the test split is scored and its reports written; now the disk is full
        return real_copy(source, path, **options)

    monkeypatch.setattr(run, "copy_atomically", disk_full_then_copy)
    capsys.readouterr()
    code = main(["train", str(config)])
    message = capsys.readouterr().err
    assert code == 2 and "Traceback" not in message, message[-3000:]
    assert (f"seglab: error: cannot write {run_dir / 'test_metrics.json'}: No space left on device (ENOSPC); no "
            f"test_metrics.json was written. The disk holding {run_dir} has 0 bytes free") in message
    assert not (run_dir / "test_metrics.json").exists() and hidden_temporaries(run_dir) == []
    assert set(checkpoint_files(run_dir)) == {"best.ckpt", "last.ckpt"}  # the run itself is whole
    # With space again, the test split's scores are one command away.
    (small_disk / "filler").unlink()
    assert main(["evaluate", str(run_dir), "--split", "test", "--no-progress"]) == 0
    assert json.loads((run_dir / "evaluate" / "test" / "metrics.json").read_text())["split"] == "test"


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_a_full_disk_as_a_logger_writes_stops_training_cleanly_and_the_run_resumes(
        small_disk, monkeypatch, capsys, logger):
    from lightning.fabric.loggers.csv_logs import _ExperimentWriter
    from torch.utils.tensorboard.writer import FileWriter

    register_tiny_model(monkeypatch)
    run_dir = small_disk / "logged"
    config = write_config(small_disk, "logged", logger=logger, runs_dir=str(small_disk))
    # The disk fills (a real tmpfs, to the last byte) as the logger writes in epoch 1. Whichever write meets it
    # first (the logger's own when it needs a new page, else seglab's next file), training stops cleanly.
    cls, method = (_ExperimentWriter, "save") if logger == "csv" else (FileWriter, "flush")
    real = getattr(cls, method)
    calls = []

    def full_from_epoch_1(self, *args, **kwargs):
        calls.append(1)
        if (run_dir / "checkpoints" / "last.ckpt").is_file() and not (small_disk / "filler").exists():
            fill_disk(small_disk)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, full_from_epoch_1)
    capsys.readouterr()
    code = main(["train", str(config)])
    message = capsys.readouterr().err
    monkeypatch.undo()
    register_tiny_model(monkeypatch)
    assert calls and (small_disk / "filler").exists()
    assert code == 2 and "Traceback" not in message, message[-3000:]
    # Whichever of the run's files fills the disk (the CSV logger's rewrite or seglab's own metrics.csv), the
    # message names it, in the run folder.
    assert "seglab: error: cannot write " in message and f"{run_dir}/" in message
    assert "No space left on device (ENOSPC)" in message
    assert f"seglab train --resume {run_dir}" in message
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] >= STEPS_PER_EPOCH  # whole
    assert hidden_temporaries(run_dir) == []
    (small_disk / "filler").unlink()
    run_seglab_here(["train", "--resume", str(run_dir)])
    assert checkpoint_files(run_dir)["last.ckpt"]["global_step"] == 3 * STEPS_PER_EPOCH
