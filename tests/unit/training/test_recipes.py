"""Every recipe's input normalisation and layer settings are those its pretrained weights were trained with.

`normalize: auto` (the default) takes them from the backbone's entry in `seglab.models.pretrained`; an explicit
mode wins. The recipes are found by glob, so a new one is covered without editing this file.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from data_fixtures import REPO_ROOT
from seglab.apps.demo import DEMO_RECIPE
from seglab.models import build_model, list_models
from seglab.models.normalization import normalization_stats
from seglab.models.registry import backbone_weights
from seglab.models.xception import map_timm_xception
from seglab.training.config import TrainConfig, load_config, make_config

# configs/ and the recipe `seglab demo` ships inside the package.
RECIPES = [*sorted((REPO_ROOT / "configs").glob("*.yaml")), DEMO_RECIPE]
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's ImageNet weights
SYMMETRIC = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's ports of DeepLab's TensorFlow Xceptions: [-1, 1]
WEIGHTS_STATS = {
    "fcn_vgg16": IMAGENET,
    "deeplabv3plus_resnet50": IMAGENET,
    "deeplabv3plus_xception41": SYMMETRIC,
    "deeplabv3plus_xception65": SYMMETRIC,
}


def test_recipes_are_found():
    assert len(RECIPES) >= 4


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_normalisation_and_layer_settings_follow_its_weights(path):
    config = load_config(path)
    options = config.model_options()
    if config.pretrained_backbone is not None:
        weights = backbone_weights(config.model)
        assert config.normalization() == (weights.mean, weights.std)
        assert {key: options.get(key) for key in weights.layer_options} == dict(weights.layer_options)
        if weights.mapping is map_timm_xception:
            # DeepLab's released Xceptions put one ReLU before each separable conv. `start_with_relu` is a config
            # field rather than a layer setting applied with the weights: checkpoints rebuild without them.
            assert options["start_with_relu"] is True
    else:
        declared = yaml.safe_load(path.read_text(encoding="utf-8")).get("normalize", "auto")
        assert config.normalization() == normalization_stats("unit" if declared == "auto" else declared)
        assert "norm_eps" not in options


def test_auto_without_weights_is_unit():
    assert TrainConfig().normalize == "auto" and TrainConfig().normalization() == UNIT
    config = load_config(None, ["normalize=auto"])
    assert config.normalization() == UNIT and config.normalize == "unit"
    assert "norm_eps" not in config.model_options()


@pytest.mark.parametrize("model", list_models())
def test_auto_with_weights_is_the_weights_normalisation(model):
    config = load_config(None, [f"model={model}", "pretrained_backbone=imagenet"])
    weights = backbone_weights(model)
    assert config.normalization() == (weights.mean, weights.std) == WEIGHTS_STATS[model]
    assert TrainConfig(model=model, pretrained_backbone="imagenet").normalization() == WEIGHTS_STATS[model]
    options = config.model_options()
    assert all(options[key] == value for key, value in weights.layer_options.items())
    assert options["pretrained_backbone"] == "imagenet"


@pytest.mark.parametrize("mode", ["unit", "symmetric", "imagenet"])
def test_explicit_mode_overrides_the_weights(mode):
    config = load_config(None, ["model=deeplabv3plus_xception65", "pretrained_backbone=imagenet", f"normalize={mode}"])
    assert config.normalize == mode and config.normalization() == normalization_stats(mode)


def test_layer_settings_are_added_only_with_weights():
    with_weights = load_config(None, ["model=deeplabv3plus_xception41", "pretrained_backbone=imagenet"])
    assert with_weights.model_options()["norm_eps"] == 1e-3
    assert "norm_eps" not in load_config(None, ["model=deeplabv3plus_xception41"]).model_options()
    assert "norm_eps" not in load_config(None, ["model=fcn_vgg16", "pretrained_backbone=imagenet"]).model_options()


@pytest.mark.parametrize("model", list_models())
def test_checkpoint_rebuild_without_weights_keeps_normalisation_and_layers(model):
    # As `seglab.inference.loading.spec_from_checkpoint` does for old checkpoints: the saved config, with
    # pretrained_backbone dropped.
    trained = load_config(None, [f"model={model}", "pretrained_backbone=imagenet"])
    rebuilt = make_config({**trained.to_dict(), "pretrained_backbone": None})
    assert rebuilt.normalization() == trained.normalization() == WEIGHTS_STATS[model]
    options = {key: value for key, value in trained.model_options().items() if key != "pretrained_backbone"}

    def backbone_eps(model_options):
        network = build_model(model, num_classes=2, **model_options)
        return {m.eps for m in network.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)}

    assert backbone_eps(rebuilt.model_options()) == backbone_eps(options)
