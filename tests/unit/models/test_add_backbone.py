"""Adding a backbone: one `BackboneEntry` (what a new backbone file declares) registered in one call gives a
DeepLabV3+ on it, which the registry, the config, pretrained loading and BatchNorm folding all see."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from seglab.errors import ConfigError
from seglab.inference.fold import fold_batch_norms
from seglab.models import (
    Backbone,
    BackboneEntry,
    BackboneWeights,
    FeatureInfo,
    build_model,
    list_models,
    model_options,
    register_backbone,
    registry,
)
from seglab.models.backbone import dilated_stages, without_keys
from seglab.models.layers import ConvNormAct
from seglab.models.registry import backbone_weights
from seglab.training.config import load_config


class ToyBackbone(Backbone):
    """Four conv-BN-ReLU stages of stride 2; publishes `low_level` (the second stage's, stride 4) and `out`."""

    def __init__(self, *, output_stride: int, width: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        feature_info = []
        in_channels = 3
        for index, stage in enumerate(dilated_stages((2, 2, 2, 2), output_stride=output_stride, stem_stride=1)):
            channels = width * 2**index
            self.stages.append(ConvNormAct(in_channels, channels, stride=stage.stride, dilation=stage.dilation))
            in_channels = channels
            if index == 1:
                feature_info.append(FeatureInfo("low_level", channels, stage.output_stride))
        feature_info.append(FeatureInfo("out", in_channels, stage.output_stride))
        self.feature_info = tuple(feature_info)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index == 1:
                features["low_level"] = x
        features["out"] = x
        return features


def toy(*, output_stride: int, width: int = 8) -> ToyBackbone:
    """A toy backbone; `width` is its first stage's channels."""
    return ToyBackbone(output_stride=output_stride, width=width)


TOY = BackboneEntry(
    name="toy", build=toy, heads=("deeplabv3plus",), description="a four-stage toy",
    weights=BackboneWeights(url="https://example.invalid/toy-0123abcd.pth", layout="toy",
                            mapping=lambda state: without_keys(state, ("fc.",)), normalization="imagenet",
                            layer_options={"width": 8}),
)


@pytest.fixture
def own_registry(monkeypatch):
    """The registry as it is, restored after the test: a backbone registered here is gone for the next test."""
    monkeypatch.setattr(registry, "MODEL_FACTORIES", dict(registry.MODEL_FACTORIES))
    monkeypatch.setattr(registry, "MODEL_BACKBONES", dict(registry.MODEL_BACKBONES))


@pytest.mark.usefixtures("own_registry")
@pytest.mark.parametrize(("output_stride", "strides"), [(16, {"low_level": 4, "out": 16}),
                                                        (8, {"low_level": 4, "out": 8})])
def test_a_registered_backbone_builds_a_deeplabv3plus(output_stride, strides):
    built_in = list_models()
    assert register_backbone(TOY) == ["deeplabv3plus_toy"]
    assert list_models() == sorted([*built_in, "deeplabv3plus_toy"])
    assert model_options("deeplabv3plus_toy") == {"output_stride": 16, "atrous_rates": None,
                                                  "freeze_backbone": False, "width": 8}
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_toy", num_classes=3, output_stride=output_stride, width=4).eval()
    images = torch.randn(2, 3, 37, 51)
    with torch.no_grad():
        logits = model(images)
        features = model.backbone(torch.randn(1, 3, 64, 64))
    assert logits.shape == (2, 3, 37, 51) and torch.isfinite(logits).all()
    assert {name: 64 // f.shape[-1] for name, f in features.items()} == strides
    assert {info.name: info.stride for info in model.backbone.feature_info} == strides
    assert {info.name: info.channels for info in model.backbone.feature_info} == {"low_level": 8, "out": 32}
    # Its ConvNormAct layers fold like every built-in model's (tests/test_fold.py covers those).
    folded = fold_batch_norms(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(images), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("own_registry")
def test_the_entry_s_weights_reach_build_model_and_the_config(tmp_path):
    register_backbone(TOY)
    assert backbone_weights("deeplabv3plus_toy") is TOY.weights
    torch.manual_seed(1)
    state = {**toy(output_stride=16).state_dict(), "fc.weight": torch.randn(10, 64)}  # fc: a classifier to drop
    torch.save(state, tmp_path / "toy.pth")
    model = build_model("deeplabv3plus_toy", num_classes=2, pretrained_backbone=tmp_path / "toy.pth")
    assert torch.equal(model.backbone.stages[3].conv.weight, state["stages.3.conv.weight"])
    with pytest.raises(ConfigError, match=r"\(toy layout\) needs width=8, got width=4"):
        build_model("deeplabv3plus_toy", num_classes=2, width=4, pretrained_backbone=tmp_path / "toy.pth")
    config = load_config(None, ["model=deeplabv3plus_toy", "output_stride=8", "pretrained_backbone=imagenet"])
    assert config.normalize == "imagenet"
    assert config.model_options() == {"output_stride": 8, "freeze_backbone": False, "width": 8,
                                      "pretrained_backbone": "imagenet"}


@pytest.mark.usefixtures("own_registry")
def test_a_taken_name_an_unknown_head_and_a_bad_output_stride_are_refused():
    register_backbone(TOY)
    with pytest.raises(ConfigError, match="deeplabv3plus_toy are registered already"):
        register_backbone(TOY)
    with pytest.raises(ConfigError, match="unknown heads \\['unet'\\]; heads: fcn, deeplabv3plus"):
        register_backbone(BackboneEntry(name="toy2", build=toy, heads=("unet",), description="toy"))
    with pytest.raises(ConfigError, match="output_stride must be 8, 16 or 32, got 64"):
        build_model("deeplabv3plus_toy", num_classes=2, output_stride=64)
