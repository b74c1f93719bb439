"""End-to-end training on tiny shapes (32 px, few steps): run folder, checkpoints, resume, early stopping."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

import seglab
from seglab.errors import ConfigError
from seglab.inference.loading import read_checkpoint
from seglab.training import checkpoints
from seglab.training.config import load_config, make_config
from seglab.training.hardware import lightning_precision
from seglab.training.run import resume, train
from training_helpers import assert_same_metrics, assert_same_weights, logged_metrics

TINY = {
    "dataset": "shapes", "image_size": 32, "train_length": 16, "val_length": 8, "batch_size": 4,
    "model": "deeplabv3plus_xception41", "precision": "32-true", "progress_bar": False, "lr": 2e-3,
    "log_every_n_steps": 1, "test_after_training": False,
}
# The run the whole-run tests read: three epochs with augmentation, ending with the test split scored.
FITTED = {"max_epochs": 3, "augment": True, "test_after_training": True}


def tiny(tmp_path: Path, **overrides) -> object:
    return make_config({**TINY, "runs_dir": str(tmp_path), "name": "tiny", **overrides})


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, object]:
    """One Xception-41 run of `FITTED` (its runs folder and `TrainResult`), shared by the tests that read a whole
    run: it is the costliest training of this file."""
    runs = tmp_path_factory.mktemp("fitted")
    return runs, train(tiny(runs, **FITTED))


def test_run_folder_holds_everything(fitted):
    runs, result = fitted
    run = runs / "tiny"
    assert result.run_dir == run
    assert load_config(run / "config.yaml") == tiny(runs, **FITTED)
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "training_curves.png").stat().st_size > 10_000
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for column in ("train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "val_mean_class_accuracy", "lr",
                   "val_iou_background", "val_iou_circle", "val_iou_triangle", "val_iou_square"):
        assert all(math.isfinite(float(r[column])) for r in rows), column
    assert result.best_miou == pytest.approx(max(float(r["val_miou"]) for r in rows))
    # Progress bar shows the loss and images/s (Lightning's bar adds the ETA).
    assert {"train/loss_step", "img/s"} <= set(result.trainer.progress_bar_metrics)
    # Checkpoints are plain data: they load with weights_only=True and carry the normalisation mode.
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["hyper_parameters"]["config"]["normalize"] == "unit" and "optimizer_states" not in best
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert {"optimizer_states", "lr_schedulers", "loops", "callbacks", "epoch", "global_step"} <= set(last)
    assert last["hyper_parameters"]["class_names"] == ["background", "circle", "triangle", "square"]
    # The predictor loaded from last.ckpt predicts exactly like the trained module; best.ckpt loads too.
    rebuilt = seglab.load(run / "checkpoints" / "last.ckpt")
    trained = result.module.cpu().eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt.scores(images)[0], trained(images))
    assert seglab.load(run / "checkpoints" / "best.ckpt").class_names[3] == "square"
    # Training ended by scoring best.ckpt on the test split.
    tested = json.loads((run / "test_metrics.json").read_text())
    assert tested["images"] == 100 and 0 <= tested["miou"] <= 1 and set(tested["per_class"]) == {
        "background", "circle", "triangle", "square"}
    assert result.test is not None and result.test.out == run / "evaluate" / "test"
    with pytest.raises(ConfigError, match="already exists"):
        train(tiny(runs, max_epochs=1))


def test_loss_decreases_on_a_tiny_fit(fitted):
    losses = [row["train_loss"] for row in fitted[1].history]
    assert losses[-1] < 0.7 * losses[0], losses


class SizeRecorder(torch.nn.Conv2d):
    """A 1x1 convolution that records the side of every batch it sees, by mode."""

    def __init__(self) -> None:
        super().__init__(3, 4, 1)
        self.sides: dict[bool, set[int]] = {True: set(), False: set()}

    def forward(self, images):
        self.sides[self.training].add(images.shape[-1])
        return super().forward(images)


def test_progressive_resize_trains_small_and_predicts_at_the_training_scale(tmp_path):
    recorder = SizeRecorder()
    result = train(tiny(tmp_path, max_epochs=2, progressive_resize=[[0, 16], [0.5, 24]]), model=recorder)
    assert recorder.sides[True] == {16, 24}
    assert recorder.sides[False] == {24}  # validation at the last training side, 24 of 32 px
    module = result.module.eval()
    with torch.no_grad():
        logits = module(torch.rand(2, 3, 32, 48))
    # Any input is shown at the working size validation used (the last training side), logits come back.
    assert logits.shape == (2, 4, 32, 48) and recorder.sides[False] == {24}


@pytest.mark.parametrize(("overrides", "geometry"), [
    ({}, {"working_size": (32, 32)}),
    ({"progressive_resize": [[0, 16], [0.7, 32]]}, {"working_size": (32, 32)}),
    ({"progressive_resize": [[0, 16]]}, {"working_size": (16, 16)}),
    ({"progressive_resize": [[0, 64]]}, {"working_size": (32, 32)}),  # a side above image_size trains at it
    ({"progressive_resize": [[0, 16]], "inference_size": 32}, {"working_size": (32, 32)}),
    ({"inference_size": 24}, {"working_size": (24, 24)}),
    # Non-square: the short side is scaled and the aspect kept.
    ({"image_size": [36, 48], "progressive_resize": [[0, 18]]}, {"working_size": (18, 24)}),
    ({"image_size": [36, 48], "keep_aspect": True}, {"working_size": (36, 48), "keep_aspect": True}),
    # Each file's own size: only the short side is set, if anything.
    ({"image_size": None, "crop_size": 16}, {"working_size": None, "working_short_side": None}),
    ({"image_size": None, "crop_size": 16, "inference_size": 20}, {"working_size": None, "working_short_side": 20}),
])
def test_working_size_follows_the_validation_transform(tmp_path, overrides, geometry):
    spec = tiny(tmp_path, **overrides).inference_spec(num_classes=4, class_names=["a", "b", "c", "d"])
    assert {key: getattr(spec, key) for key in geometry} == geometry


class Crash(Callback):
    """Raises at the start of epoch `epoch`, after the previous epoch's checkpoints were written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


class SmallNet(torch.nn.Sequential):
    """Conv-BN-ReLU-dropout-conv: batch norm, dropout and Adam state at a fraction of Xception's cost."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                         torch.nn.Dropout2d(0.3), torch.nn.Conv2d(16, 4, 3, padding=1))


def test_resume_after_a_crash_ends_like_an_uninterrupted_run(tmp_path):
    # Augmentation, dropout and a step-wise cosine schedule make the run depend on the RNG and scheduler
    # state; early stopping (never triggered here) checks that its counters survive too.
    options = {"max_epochs": 3, "augment": True, "scheduler": "cosine", "warmup_fraction": 0.2,
               "early_stopping_patience": 5, "lr": 1e-2}
    torch.manual_seed(0)
    straight = train(tiny(tmp_path, name="straight", **options), model=SmallNet())
    with pytest.raises(RuntimeError, match="simulated crash"):
        torch.manual_seed(0)
        train(tiny(tmp_path, name="crashed", **options), model=SmallNet(), extra_callbacks=[Crash(epoch=2)])
    assert len(_rows(tmp_path / "crashed")) == 2
    torch.manual_seed(1)  # the weights come from the checkpoint, not from this initialisation
    resumed = resume(tmp_path / "crashed", model=SmallNet())
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    # Every logged metric (all of metrics.csv but the wall-clock time) and every weight and buffer.
    assert_same_metrics(resumed.history, straight.history)
    assert_same_metrics(logged_metrics(tmp_path / "crashed"), logged_metrics(tmp_path / "straight"))
    assert_same_weights(resumed.module.state_dict(), straight.module.state_dict())
    stopper = torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert any(key.startswith("EarlyStopping") for key in stopper)


class Stalled(torch.nn.Module):
    """Predicts the same every epoch (a frozen 1x1 convolution), so val mIoU never improves."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1).requires_grad_(False)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the optimiser something to hold

    def forward(self, images):
        return self.conv(images) + 0 * self.unused


def test_early_stopping_triggers_when_val_miou_stalls(tmp_path):
    result = train(tiny(tmp_path, max_epochs=20, early_stopping_patience=2, scheduler="none"), model=Stalled())
    assert len(result.history) == 3  # the first validation sets the best, two more without gain
    assert result.trainer.current_epoch < 19


def test_plateau_schedule_decays_the_lr_when_val_miou_stalls(tmp_path):
    result = train(tiny(tmp_path, max_epochs=4, lr=1e-3, scheduler="plateau", plateau_patience=1,
                        plateau_factor=0.5), model=Stalled())
    # Rows record the LR used in each epoch: decayed after two epochs without gain (patience 1).
    assert [row["lr"] for row in result.history] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])


class StepLRs(Callback):
    """The learning rate every optimiser step uses."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


# The LRs of the first three of 8 steps (peak 2e-3, progress p = step / 8), worked out by hand from the README's
# table: poly has no warm-up; cosine warms up linearly from 0 over warmup_fraction 0.25 (2 steps); one-cycle
# rises from lr/25 along half a cosine over onecycle_pct_start 0.25: lr * (0.04 + 0.96 * 0.5) at step 1.
@pytest.mark.parametrize(("scheduler", "first_lrs"), [
    ("poly", [2e-3, 2e-3 * (7 / 8) ** 0.9, 2e-3 * (6 / 8) ** 0.9]),
    ("cosine", [0.0, 1e-3, 2e-3]),
    ("onecycle", [8e-5, 1.04e-3, 2e-3]),
])
def test_step_schedules_follow_training_progress(tmp_path, scheduler, first_lrs):
    steps = StepLRs()
    result = train(tiny(tmp_path, train_length=8, max_epochs=4, scheduler=scheduler, warmup_fraction=0.25),
                   model=torch.nn.Conv2d(3, 4, 1), extra_callbacks=[steps])
    assert len(steps.lrs) == 8
    assert steps.lrs[:3] == pytest.approx(first_lrs, rel=1e-6, abs=1e-12)
    lrs = [row["lr"] for row in result.history]
    assert lrs[-1] < 0.05 * 2e-3, lrs  # decayed to (nearly) zero at the end


@pytest.mark.parametrize(("optimizer", "fused"), [("adamw", True), ("adam", True), ("sgd", None)])
def test_adam_family_steps_with_the_fused_kernel_on_a_cpu(optimizer, fused):
    from seglab.training.optim import build_optimizer

    built = build_optimizer(make_config(TINY, optimizer=optimizer), torch.nn.Linear(3, 2).parameters())
    assert built.defaults.get("fused") is fused


def test_time_budget_stops_training_and_still_validates(tmp_path):
    result = train(tiny(tmp_path, max_epochs=None, max_minutes=0.05, train_length=10_000, scheduler="cosine",
                        limit_train_batches=1000), model=torch.nn.Conv2d(3, 4, 1))
    assert result.best_checkpoint is not None and result.history  # validated when the clock stopped it
    assert result.history[-1]["lr"] < 0.2 * 2e-3  # the cosine schedule followed the clock down


def test_trainer_checkpoints_go_through_the_atomic_writer(tmp_path, monkeypatch):
    written = []
    original = checkpoints.save_atomically
    monkeypatch.setattr(checkpoints, "save_atomically", lambda c, p: (written.append(Path(p).name), original(c, p)))
    train(tiny(tmp_path, max_epochs=1), model=torch.nn.Conv2d(3, 4, 1))
    assert {"best.ckpt", "last.ckpt"} <= set(written)


def test_checkpoints_that_would_run_code_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Crash(1)}, path)
    with pytest.raises(Exception, match="cannot read checkpoint"):
        read_checkpoint(path)


def test_precision_choice(tmp_path, monkeypatch):
    import seglab.inference.device as device

    assert lightning_precision(tiny(tmp_path, precision="32-true")) == "32-true"
    assert lightning_precision(tiny(tmp_path, precision="bf16-mixed", accelerator="cpu")) == "bf16-mixed"
    with pytest.raises(ConfigError, match="needs a GPU"):
        lightning_precision(tiny(tmp_path, precision="16-mixed", accelerator="cpu"))
    # "auto" follows the device's answer to "is bf16 native here?", replaced by each answer in turn (the README's
    # rule: bf16 where native, else fp16 on a GPU and fp32 on a CPU).
    for native, on_cpu, on_gpu in ((True, "bf16-mixed", "bf16-mixed"), (False, "32-true", "16-mixed")):
        monkeypatch.setattr(device, "bf16_is_fast", lambda _device, native=native: native)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert lightning_precision(tiny(tmp_path, precision="auto", accelerator="cpu")) == on_cpu
        assert lightning_precision(tiny(tmp_path, precision="auto", accelerator="auto")) == on_cpu
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert lightning_precision(tiny(tmp_path, precision="auto", accelerator="gpu")) == on_gpu
        assert lightning_precision(tiny(tmp_path, precision="auto", accelerator="auto")) == on_gpu
        assert lightning_precision(tiny(tmp_path, precision="auto", accelerator="mps")) == "32-true"


def test_channels_last_reaches_every_convolution_in_training_and_validation(tmp_path):
    model = SmallNet()
    seen: list[tuple[bool, bool, bool]] = []  # (training, input is NHWC, weight is NHWC), per convolution call

    def record(conv, inputs):
        seen.append((conv.training, inputs[0].is_contiguous(memory_format=torch.channels_last),
                     conv.weight.is_contiguous(memory_format=torch.channels_last)))

    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_pre_hook(record)
    train(tiny(tmp_path, max_epochs=1, channels_last=True), model=model)
    assert {training for training, _, _ in seen} == {True, False}  # training steps and validation both seen
    assert all(nhwc_input and nhwc_weight for _, nhwc_input, nhwc_weight in seen), seen


def test_bf16_and_channels_last_train(tmp_path):
    if not bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("this CPU has no fast bf16 (oneDNN reports no support)")
    result = train(tiny(tmp_path, max_epochs=1, precision="bf16-mixed", channels_last=True))
    assert math.isfinite(result.history[0]["train_loss"]) and result.history[0]["val_miou"] > 0


def test_class_weights_auto_and_mismatch(tmp_path):
    result = train(tiny(tmp_path, max_epochs=1, class_weights="auto"), model=torch.nn.Conv2d(3, 4, 1))
    weights = result.module.hparams["class_weights"]
    assert len(weights) == 4 and weights[0] < min(weights[1:])  # background is the most frequent class
    with pytest.raises(ConfigError, match="class_weights has 2 entries but the dataset has 4 classes"):
        train(tiny(tmp_path, name="other", max_epochs=1, class_weights=[1, 2]), model=torch.nn.Conv2d(3, 4, 1))


NOISY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
IMPORT_CHECK = f"""
import json, logging, warnings
import seglab.training.run
record = logging.LogRecord("x", logging.WARNING, "x.py", 1, "try litlogger", None, None)
passes = [bool(logging.getLogger(name).filter(record)) for name in {NOISY_LOGGERS!r}]
with warnings.catch_warnings(record=True) as caught:
    warnings.warn("isinstance(treespec, LeafSpec) is deprecated")
print(json.dumps({{"records_pass": passes, "warnings_shown": len(caught)}}))
"""


def test_importing_the_engine_leaves_warning_and_log_filters_alone():
    # A fresh interpreter: pytest restores the warning filters after collection, which would hide import-time ones.
    completed = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, check=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert json.loads(completed.stdout.splitlines()[-1]) == {"records_pass": [True, True], "warnings_shown": 1}


class MakesLightningNoise(Callback):
    """Emits the warning and the log record that train() silences."""

    warning = "You have overridden `on_after_batch_transfer` in `LightningModule`"
    record = "try litlogger"

    def on_train_start(self, trainer, pl_module) -> None:
        warnings.warn(self.warning, stacklevel=1)
        logging.getLogger(NOISY_LOGGERS[0]).warning(self.record)


def test_train_silences_lightnings_noise_only_while_it_runs(tmp_path):
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger(NOISY_LOGGERS[0])
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(tiny(tmp_path, max_steps=1), model=torch.nn.Conv2d(3, 4, 1),
                  extra_callbacks=[MakesLightningNoise()])
            MakesLightningNoise().on_train_start(None, None)  # after train(): heard again
    finally:
        logger.removeHandler(handler)
    assert [str(w.message) for w in caught].count(MakesLightningNoise.warning) == 1
    assert records.count(MakesLightningNoise.record) == 1
