"""`init_from`: a new run starts from a trained run's weights; the classifier starts fresh when the classes change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.errors import WeightsError
from seglab.inference.loading import model_state, read_checkpoint
from seglab.models import build_model
from seglab.training.config import make_config
from seglab.training.finetune import InitReport, init_normalization, initialise_from
from seglab.training.run import train

TINY = {
    "dataset": "shapes", "image_size": 32, "train_length": 16, "val_length": 8, "batch_size": 4,
    "model": "deeplabv3plus_xception41", "precision": "32-true", "progress_bar": False, "lr": 2e-3,
    "log_every_n_steps": 1, "max_epochs": 1, "test_after_training": False,
}
CLASSIFIER = ["head.classifier.weight", "head.classifier.bias"]


def _backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in state.items() if name.startswith("backbone.")}


def _two_class_folder(root: Path) -> dict[str, object]:
    # Six 32 px pairs: a bright square on a dark image, labelled 1 on background 0.
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(6):
        image = np.full((32, 32, 3), 30, dtype=np.uint8)
        mask = np.zeros((32, 32), dtype=np.uint8)
        top = 4 + 3 * index
        image[top:top + 10, top:top + 10] = 220
        mask[top:top + 10, top:top + 10] = 1
        Image.fromarray(image).save(images / f"{index}.png")
        Image.fromarray(mask).save(masks / f"{index}.png")
    return {"dataset": "folder", "images_dir": str(images), "masks_dir": str(masks),
            "class_names": ["background", "square"], "val_fraction": 0.34}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A 4-class run on the shapes data (one short epoch)."""
    runs = tmp_path_factory.mktemp("source")
    return train(make_config({**TINY, "runs_dir": str(runs), "name": "source"})).run_dir


@pytest.fixture(scope="module")
def source_weights(source_run) -> dict[str, torch.Tensor]:
    path = source_run / "checkpoints" / "best.ckpt"
    return model_state(read_checkpoint(path), path)


def test_initialise_from_copies_everything_but_the_new_classifier(source_run, source_weights):
    model = build_model("deeplabv3plus_xception41", num_classes=2, freeze_backbone=True)
    fresh_classifier = model.head.classifier.weight.detach().clone()
    report = initialise_from(model, source_run)
    assert isinstance(report, InitReport) and report.source == source_run / "checkpoints" / "best.ckpt"
    assert report.reinitialised == CLASSIFIER and report.unused == CLASSIFIER
    assert len(report.copied) == len(model.state_dict()) - 2
    state = model.state_dict()
    backbone = _backbone(source_weights)
    assert backbone and all(torch.equal(state[name], tensor) for name, tensor in backbone.items())
    assert torch.equal(state["head.fuse.1.bn_pw.running_var"], source_weights["head.fuse.1.bn_pw.running_var"])
    assert torch.equal(model.head.classifier.weight, fresh_classifier)
    # Loading keeps the backbone frozen.
    assert not any(p.requires_grad for p in model.backbone.parameters()) and not model.train().backbone.training
    assert "copied 588 of 590 tensors" in report.summary() and "head.classifier.weight" in report.summary()
    # The same number of classes: every tensor is copied.
    same = build_model("deeplabv3plus_xception41", num_classes=4)
    assert initialise_from(same, source_run).reinitialised == []
    assert all(torch.equal(same.state_dict()[name], tensor) for name, tensor in source_weights.items())


def test_init_normalization_is_the_sources(source_run):
    mean, std = init_normalization(source_run)
    assert mean == (0.0, 0.0, 0.0) and std == (1.0, 1.0, 1.0)  # the shapes run trained with `unit`


def test_finetune_run_on_other_classes_keeps_the_frozen_backbone(source_run, source_weights, tmp_path, capsys):
    config = make_config({**TINY, **_two_class_folder(tmp_path), "runs_dir": str(tmp_path / "runs"), "name": "tuned",
                          "init_from": str(source_run), "freeze_backbone": True})
    result = train(config)
    assert "re-initialised 2: head.classifier.weight, head.classifier.bias" in capsys.readouterr().out
    report = json.loads((result.run_dir / "init_from.json").read_text())
    assert report["source"] == str(source_run / "checkpoints" / "best.ckpt")
    assert report["reinitialised"] == CLASSIFIER and len(report["copied"]) == 588
    assert not any(name.startswith("backbone.") for name in report["reinitialised"])
    backbone = _backbone(source_weights)
    for path in (result.best_checkpoint, result.last_checkpoint):
        tuned = model_state(read_checkpoint(path), path)
        assert tuned["head.classifier.weight"].shape[0] == 2
        assert all(torch.equal(tuned[name], tensor) for name, tensor in backbone.items()), path
    # The head did train: fine-tuning changed it from the source's.
    tuned = model_state(read_checkpoint(result.last_checkpoint), result.last_checkpoint)
    aspp = "head.aspp.branches.0.conv.weight"
    assert not torch.equal(tuned[aspp], source_weights[aspp])


def test_another_architecture_is_refused(source_run, tmp_path):
    vgg = build_model("fcn_vgg16", num_classes=2)
    path = tmp_path / "vgg.ckpt"
    torch.save({"state_dict": {"model." + name: tensor for name, tensor in vgg.state_dict().items()}}, path)
    with pytest.raises(WeightsError, match=r"vgg\.ckpt holds another architecture: its tensors fit only 0% "):
        initialise_from(build_model("deeplabv3plus_xception41", num_classes=2), path)
    # And the other way round, naming the model the checkpoint holds.
    with pytest.raises(WeightsError, match=r"best\.ckpt \(a deeplabv3plus_xception41\) holds another architecture"):
        initialise_from(vgg, source_run)


def test_missing_or_unusable_sources_are_named(tmp_path):
    model = build_model("deeplabv3plus_xception41", num_classes=2)
    missing = tmp_path / "nowhere" / "best.ckpt"
    with pytest.raises(WeightsError, match=rf"init_from: {missing} does not exist; .*run folder"):
        initialise_from(model, missing)
    with pytest.raises(WeightsError, match=r"init_from: .*without checkpoints/best\.ckpt"):
        initialise_from(model, tmp_path)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"init_from: cannot read checkpoint .*garbage\.ckpt"):
        initialise_from(model, garbage)
    backbone_only = tmp_path / "backbone.pth"
    torch.save(model.backbone.state_dict(), backbone_only)
    with pytest.raises(WeightsError, match=r"backbone\.pth holds no state_dict.*pretrained_backbone"):
        initialise_from(model, backbone_only)
    with pytest.raises(WeightsError, match="does not exist"):
        init_normalization(missing)
