"""The explicit registry of model factories: `build_model(name, num_classes=..., **options)`.

Models are a head on a backbone. Each backbone's file declares a `BackboneEntry` (its builder, heads, weights);
`BUILT_IN_BACKBONES` lists them, and `register_backbone` turns an entry into one factory per head, named
`<head>_<backbone>`, with the head's options followed by the backbone builder's as typed keyword arguments.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from seglab.errors import ConfigError
from seglab.models.backbone import BackboneEntry, BackboneWeights
from seglab.models.heads import DeepLabV3PlusHead, FCNHead, aspp_rates
from seglab.models.pretrained import load_backbone_weights
from seglab.models.resnet import RESNET50_ENTRY
from seglab.models.segmenter import SegmentationModel
from seglab.models.vgg import VGG16_ENTRY
from seglab.models.xception import XCEPTION41_ENTRY, XCEPTION65_ENTRY

# A new backbone's file adds its entry here (and its import above).
BUILT_IN_BACKBONES: tuple[BackboneEntry, ...] = (
    VGG16_ENTRY,
    RESNET50_ENTRY,
    XCEPTION41_ENTRY,
    XCEPTION65_ENTRY,
)

# Model options renamed since checkpoints and configs were written with them: old name -> new name. Configs
# (`seglab.training.config`) and `build_model` (which checkpoints' inference specs reach) accept the old names.
RENAMED_OPTIONS: Mapping[str, str] = {"preactivation": "start_with_relu"}

MODEL_FACTORIES: dict[str, Callable[..., SegmentationModel]] = {}
# The backbone each registered model is built on: its weights, normalisation and layer settings.
MODEL_BACKBONES: dict[str, BackboneEntry] = {}


def _fcn(entry: BackboneEntry, *, num_classes: int, freeze_backbone: bool = False,
         **backbone_options: Any) -> SegmentationModel:
    """FCN (Long et al. 2015, https://arxiv.org/abs/1411.4038): the deepest feature upsampled by learned
    transposed convolutions to full resolution, adding each shallower feature on the way."""
    backbone = entry.build(**backbone_options)
    # From the deepest feature, each 2x step adds the next shallower one (VGG16: pool5, then block5, 4, 3).
    deepest, *skips = reversed(backbone.feature_info)
    head = FCNHead(deepest, skips, num_classes)
    return SegmentationModel(backbone, head, input_multiple=deepest.stride, freeze_backbone=freeze_backbone)


def _deeplabv3plus(entry: BackboneEntry, *, num_classes: int, output_stride: int = 16,
                   atrous_rates: Sequence[int] | None = None, freeze_backbone: bool = False,
                   **backbone_options: Any) -> SegmentationModel:
    """DeepLabV3+ (Chen et al. 2018, https://arxiv.org/abs/1802.02611): ASPP on the `out` feature (rates from
    `output_stride` unless `atrous_rates` are given), decoded with the `low_level` feature."""
    backbone = entry.build(output_stride=output_stride, **backbone_options)
    rates = aspp_rates(output_stride) if atrous_rates is None else tuple(atrous_rates)
    if len(rates) != 3 or any(int(r) < 1 for r in rates):
        raise ConfigError(f"atrous_rates must be three positive integers, got {atrous_rates!r}")
    head = DeepLabV3PlusHead(backbone.feature("out"), backbone.feature("low_level"), num_classes, atrous_rates=rates)
    return SegmentationModel(backbone, head, freeze_backbone=freeze_backbone)


# The heads a backbone can be registered with: each builder takes the entry, then the head's options, then the
# backbone builder's.
HEADS: dict[str, Callable[..., SegmentationModel]] = {"fcn": _fcn, "deeplabv3plus": _deeplabv3plus}


def _model_factory(head: str, entry: BackboneEntry) -> Callable[..., SegmentationModel]:
    build = HEADS[head]

    def factory(**options: Any) -> SegmentationModel:
        return build(entry, **options)

    # The factory's signature is the head's options then the backbone's, so `model_options` and errors list them.
    head_parameters = list(inspect.signature(build).parameters.values())[1:-1]
    backbone_parameters = [p for p in inspect.signature(entry.build).parameters.values() if p.name != "output_stride"]
    factory.__signature__ = inspect.Signature([*head_parameters, *backbone_parameters],
                                              return_annotation=SegmentationModel)
    factory.__name__ = factory.__qualname__ = f"{head}_{entry.name}"
    factory.__doc__ = f"{build.__doc__}\n\nBackbone: {entry.description}. {entry.build.__doc__ or ''}".rstrip()
    return factory


def register_backbone(entry: BackboneEntry) -> list[str]:
    """Registers one model per head of `entry`, named `<head>_<entry.name>`, and returns their names."""
    unknown = [head for head in entry.heads if head not in HEADS]
    if unknown:
        raise ConfigError(f"backbone {entry.name!r} names unknown heads {unknown}; heads: {', '.join(HEADS)}")
    names = [f"{head}_{entry.name}" for head in entry.heads]
    taken = [name for name in names if name in MODEL_FACTORIES]
    if taken:
        raise ConfigError(f"models {', '.join(taken)} are registered already; give the backbone another name")
    for head, name in zip(entry.heads, names, strict=True):
        MODEL_FACTORIES[name] = _model_factory(head, entry)
        MODEL_BACKBONES[name] = entry
    return names


for _entry in BUILT_IN_BACKBONES:
    register_backbone(_entry)


def backbone_weights(model_name: str) -> BackboneWeights:
    """The `BackboneWeights` of the backbone a registered model is built on (its `BackboneEntry`)."""
    entry = MODEL_BACKBONES.get(model_name)
    if entry is None or entry.weights is None:
        with_weights = [name for name, entry in sorted(MODEL_BACKBONES.items()) if entry.weights is not None]
        raise ConfigError(f"no known backbone weights for model {model_name!r}; models with weights: "
                          f"{', '.join(with_weights)}")
    return entry.weights


def list_models() -> list[str]:
    """Names accepted by `build_model`, sorted."""
    return sorted(MODEL_FACTORIES)


def model_options(name: str) -> dict[str, object]:
    """The keyword options of a model (besides num_classes) with their defaults."""
    factory = _factory(name)
    return {p.name: p.default for p in inspect.signature(factory).parameters.values() if p.name != "num_classes"}


def renamed_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` with the old names in `RENAMED_OPTIONS` replaced by the new ones (with a DeprecationWarning)."""
    old = [key for key in options if key in RENAMED_OPTIONS]
    if not old:
        return dict(options)
    both = [key for key in old if RENAMED_OPTIONS[key] in options]
    if both:
        raise ConfigError(f"give {', '.join(RENAMED_OPTIONS[key] for key in both)} only: "
                          f"{', '.join(both)} is its old name")
    warnings.warn(f"{', '.join(f'{key} is now called {RENAMED_OPTIONS[key]}' for key in old)}; the old name will "
                  "stop working in a future seglab", DeprecationWarning, stacklevel=3)
    return {RENAMED_OPTIONS.get(key, key): value for key, value in options.items()}


def _factory(name: str) -> Callable[..., SegmentationModel]:
    try:
        return MODEL_FACTORIES[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def build_model(
    name: str,
    *,
    num_classes: int,
    pretrained_backbone: str | Path | None = None,
    **options: object,
) -> nn.Module:
    """Builds a registered segmentation model.

    Args:
        name: one of `list_models()`.
        num_classes: output channels of the logits.
        pretrained_backbone: "imagenet" for the backbone's known weights, or a local file or an http(s) URL
            of weights in the same family's state-dict layout (torchvision's VGG16/ResNet-50, timm's aligned
            Xception), trained with the same normalisation and layer settings; see
            `backbone_weights(name)`. URLs are downloaded to the cache.
        **options: the model's own options (see `model_options(name)`), e.g. `output_stride=8`; with
            `pretrained_backbone`, the weights' layer settings (e.g. `norm_eps`) may not be given other values.
            Old option names (`RENAMED_OPTIONS`) are accepted with a DeprecationWarning.
    """
    factory = _factory(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    options = renamed_options(options)
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}"
        )
    if pretrained_backbone is None:
        return factory(num_classes=num_classes, **options)
    weights = backbone_weights(name)
    conflicting = {key: options[key] for key, value in weights.layer_options.items()
                   if key in options and options[key] != value}
    if conflicting:
        needed = ", ".join(f"{key}={weights.layer_options[key]!r}" for key in conflicting)
        given = ", ".join(f"{key}={value!r}" for key, value in conflicting.items())
        raise ConfigError(f"{name}'s pretrained backbone ({weights.layout} layout) needs {needed}, got {given}")
    model = factory(num_classes=num_classes, **options)
    load_backbone_weights(model.backbone, pretrained_backbone, weights)
    return model
