"""The exponential moving average of the weights (`ema_decay`): what validation scores, what the checkpoints
hold, and an interrupted run resuming to the same average."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback
from test_training_engine import Crash, SmallNet, tiny

from seglab.errors import ConfigError
from seglab.training.config import make_config
from seglab.training.run import resume, train
from training_helpers import assert_same_metrics, assert_same_weights

DECAY = 0.8


class WeightsAfterEachStep(Callback):
    """The model's weights after every optimiser step (before the next batch), as the average sees them."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({name: value.detach().clone() for name, value in pl_module.model.state_dict().items()})


def expected_average(initial: dict[str, torch.Tensor], steps: list[dict[str, torch.Tensor]]) -> dict:
    average = {name: value.clone() for name, value in initial.items()}
    for t, weights in enumerate(steps, start=1):
        decay = min(DECAY, (1 + t) / (10 + t))
        for name, value in weights.items():
            average[name] = (average[name] * decay + value * (1 - decay) if value.is_floating_point()
                             else value.clone())
    return average


def test_checkpoints_hold_the_average_that_validation_scored_and_the_raw_weights_travel_for_resume(tmp_path):
    torch.manual_seed(0)
    model = SmallNet()
    initial = {name: value.detach().clone() for name, value in model.state_dict().items()}
    recorder = WeightsAfterEachStep()
    result = train(tiny(tmp_path, max_epochs=2, ema_decay=DECAY, lr=3e-2), model=model, extra_callbacks=[recorder])
    assert len(recorder.steps) == 8  # 16 images, batch 4, 2 epochs
    average = expected_average(initial, recorder.steps)
    last = torch.load(tmp_path / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)
    saved = {name[len("model."):]: value for name, value in last["state_dict"].items() if name.startswith("model.")}
    assert_same_weights(saved, average)
    assert_same_weights(last["raw_model_state"], recorder.steps[-1])
    # The average really differs from the weights trained (else the test could not tell them apart).
    assert not torch.allclose(saved["0.weight"], recorder.steps[-1]["0.weight"], atol=1e-4)
    # best.ckpt (weights only, written during validation) holds an average too: one of the two epochs'.
    best = torch.load(tmp_path / "tiny" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    after_first_epoch = expected_average(initial, recorder.steps[:4])
    candidates = (after_first_epoch, average)
    assert any(torch.allclose(best["model.0.weight"], candidate["0.weight"], atol=1e-6) for candidate in candidates)
    # Training hands back the averaged model, and validation scored it: re-validating it gives the logged mIoU.
    assert_same_weights({name: value for name, value in result.module.model.state_dict().items()}, average)
    assert result.history[-1]["val_miou"] == pytest.approx(
        float(_validate(result.module, tmp_path)), abs=1e-6)


def _validate(module, tmp_path) -> float:
    import lightning.pytorch as pl

    from seglab.training.datamodule import SegmentationDataModule

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=tmp_path / "validate", enable_model_summary=False)
    data = SegmentationDataModule.from_config(module.config)
    return trainer.validate(module, datamodule=data, verbose=False)[0]["val/miou"]


def test_an_interrupted_run_with_an_average_resumes_to_the_same_end(tmp_path):
    options = {"max_epochs": 3, "ema_decay": DECAY, "augment": True, "lr": 1e-2}
    torch.manual_seed(0)
    straight = train(tiny(tmp_path, name="straight", **options), model=SmallNet())
    with pytest.raises(RuntimeError, match="simulated crash"):
        torch.manual_seed(0)
        train(tiny(tmp_path, name="crashed", **options), model=SmallNet(), extra_callbacks=[Crash(epoch=2)])
    torch.manual_seed(1)
    resumed = resume(tmp_path / "crashed", model=SmallNet())
    assert_same_metrics(resumed.history, straight.history)
    assert_same_weights(resumed.module.state_dict(), straight.module.state_dict())


@pytest.mark.parametrize("decay", [0, 1, 1.5])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ConfigError, match="ema_decay"):
        make_config({"ema_decay": decay})
