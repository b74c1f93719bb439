"""End-to-end training on tiny shapes (32 px, few steps): run folder, checkpoints, resume, early stopping."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

import seglab
from seglab.errors import ConfigError
from seglab.training import checkpoints
from seglab.training.checkpoints import load_checkpoint, save_atomically
from seglab.training.config import load_config, make_config
from seglab.training.run import resolve_precision, resume, train

TINY = {
    "dataset": "shapes", "image_size": 32, "train_length": 16, "val_length": 8, "batch_size": 4,
    "model": "deeplabv3plus_xception41", "precision": "32-true", "progress_bar": False, "lr": 2e-3,
    "log_every_n_steps": 1,
}


def tiny(tmp_path: Path, **overrides) -> object:
    return make_config({**TINY, "runs_dir": str(tmp_path), "name": "tiny", **overrides})


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_run_folder_holds_everything(tmp_path):
    result = train(tiny(tmp_path, max_epochs=2, augment=True))
    run = tmp_path / "tiny"
    assert result.run_dir == run
    assert load_config(run / "config.yaml") == tiny(tmp_path, max_epochs=2, augment=True)
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "training_curves.png").stat().st_size > 10_000
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
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
        train(tiny(tmp_path, max_epochs=1))


def test_loss_decreases_on_a_tiny_fit(tmp_path):
    result = train(tiny(tmp_path, max_epochs=3, lr=3e-3, scheduler="none"))
    losses = [row["train_loss"] for row in result.history]
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
    found = tiny(tmp_path, **overrides).inference_geometry()
    assert {key: found[key] for key in geometry} == geometry


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
    # Tolerance: identical on CPU in fp32 (same kernels, same order); 1e-6 leaves room for BLAS thread jitter.
    for a, b in zip(straight.history, resumed.history, strict=True):
        for key in ("train_loss", "val_loss", "val_miou", "lr"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (key, a, b)
        assert (a["step"], a["images_seen"]) == (b["step"], b["images_seen"])
    for (name, p), q in zip(straight.module.state_dict().items(), resumed.module.state_dict().values(), strict=True):
        assert torch.allclose(p.float(), q.float(), atol=1e-6), name
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


@pytest.mark.parametrize("scheduler", ["poly", "cosine", "onecycle"])
def test_step_schedules_follow_training_progress(tmp_path, scheduler):
    result = train(tiny(tmp_path, train_length=8, max_epochs=4, scheduler=scheduler, warmup_fraction=0.25),
                   model=torch.nn.Conv2d(3, 4, 1))
    lrs = [row["lr"] for row in result.history]
    assert lrs[-1] < 0.05 * 2e-3, lrs  # decayed to (nearly) zero at the end
    if scheduler != "poly":
        assert lrs[1] > lrs[0] or lrs[0] > 0.5 * 2e-3  # warm-up / one-cycle ramp


@pytest.mark.parametrize(("optimizer", "fused"), [("adamw", True), ("adam", True), ("sgd", None)])
def test_adam_family_steps_with_the_fused_kernel_on_a_cpu(optimizer, fused):
    from seglab.training.optim import build_optimizer

    built = build_optimizer(make_config(TINY, optimizer=optimizer), torch.nn.Linear(3, 2).parameters())
    assert built.defaults.get("fused") is fused


def test_time_budget_stops_training_and_still_validates(tmp_path):
    result = train(tiny(tmp_path, max_epochs=None, max_minutes=0.08, train_length=10_000, scheduler="cosine",
                        limit_train_batches=1000), model=torch.nn.Conv2d(3, 4, 1))
    assert result.best_checkpoint is not None and result.history  # validated when the clock stopped it
    assert result.history[-1]["lr"] < 0.2 * 2e-3  # the cosine schedule followed the clock down


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    save_atomically({"epoch": 1, "weights": torch.ones(3)}, path)

    def crash_mid_write(obj, file, *args, **kwargs):
        file.write(b"partial checkpoint bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_atomically({"epoch": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind


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
        load_checkpoint(path)


def test_precision_choice(tmp_path):
    assert resolve_precision(tiny(tmp_path, precision="32-true")) == "32-true"
    expected = "bf16-mixed" if torch.backends.mkldnn.is_available() and bool(
        torch.ops.mkldnn._is_mkldnn_bf16_supported()) else "32-true"
    if not torch.cuda.is_available():
        assert resolve_precision(tiny(tmp_path, precision="auto", accelerator="cpu")) == expected
        with pytest.raises(ConfigError, match="needs a GPU"):
            resolve_precision(tiny(tmp_path, precision="16-mixed", accelerator="cpu"))


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
