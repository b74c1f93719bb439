"""What every backbone publishes: a dict of named feature maps, with their channels and strides declared, and the
registry entry that says how to build it and which pretrained weights fit it.

A new backbone is one file holding its `Backbone` subclass, a keyword-only builder and a `BackboneEntry`, plus
one line in `seglab.models.registry.BUILT_IN_BACKBONES` (or one `register_backbone(entry)` call from user code).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from torch import nn

from seglab.errors import ConfigError
from seglab.models.normalization import normalization_stats

# The output strides a dilating backbone can be built for (DeepLab's 8 and 16): every stride beyond it becomes
# dilation. The one definition behind the model factories, the backbones and the training config.
OUTPUT_STRIDES = (8, 16, 32)
STRIDES_TEXT = f"{', '.join(map(str, OUTPUT_STRIDES[:-1]))} or {OUTPUT_STRIDES[-1]}"


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One feature map a backbone returns: its key, channel count and stride relative to the input."""

    name: str
    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: `forward(x)` returns `{info.name: tensor for info in self.feature_info}`.

    Heads read features by name and size themselves from `feature_info`, never from hard-coded channels.
    Subclasses build `feature_info` in the loop that builds their layers, so the two cannot disagree.
    """

    feature_info: tuple[FeatureInfo, ...]

    def feature(self, name: str) -> FeatureInfo:
        for info in self.feature_info:
            if info.name == name:
                return info
        known = ", ".join(info.name for info in self.feature_info)
        raise KeyError(f"{type(self).__name__} has no feature {name!r}; it publishes: {known}")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def check_output_stride(output_stride: object) -> None:
    """Raise a `ConfigError` unless `output_stride` is one of `OUTPUT_STRIDES`."""
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be {STRIDES_TEXT}, got {output_stride!r}")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a backbone (a block or a layer of blocks) once `output_stride` is applied."""

    stride: int  # the stride the stage applies: its own, or 1 where it became dilation
    dilation: int  # dilation of the stage's first unit, the one that would stride
    later_dilation: int  # dilation of the stage's later units (grown where the stride became dilation)
    input_stride: int  # feature stride entering the stage
    output_stride: int  # feature stride leaving it


def dilated_stages(strides: tuple[int, ...], *, output_stride: int, stem_stride: int) -> tuple[Stage, ...]:
    """Each stage's stride and dilation when every stride beyond `output_stride` becomes dilation, as in DeepLab
    (and timm's `XceptionAligned`, torchvision's `replace_stride_with_dilation`): the stage that would cross
    `output_stride` keeps the dilation it started with and multiplies it for everything after it."""
    check_output_stride(output_stride)
    current, dilation, stages = stem_stride, 1, []
    for stride in strides:
        first_dilation = dilation
        if stride > 1 and current * stride > output_stride:
            dilation *= stride
            stride = 1
        stages.append(Stage(stride, first_dilation, dilation, current, current * stride))
        current *= stride
    return tuple(stages)


def without_keys(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """`state` without the keys starting with `prefixes` (an ImageNet classifier that a backbone has no place for)."""
    return {key: value for key, value in state.items() if not key.startswith(prefixes)}


@dataclasses.dataclass(frozen=True)
class BackboneWeights:
    """A backbone's ImageNet weights and everything that must match them.

    `url` is the file `"imagenet"` fetches; `layout` names its state-dict layout and `mapping` maps it onto the
    backbone's keys. `normalization` is the input normalisation the weights were trained with (a name from
    `seglab.models.normalization.NORMALIZATIONS`; `mean`/`std` give its statistics), `layer_options` the model
    options the network must be built with to compute the features the weights were trained to compute. The
    builders' defaults equal them, so a model rebuilt from a checkpoint without fetching the weights is the same
    network. A file or URL given instead of `"imagenet"` is assumed to share the layout, normalisation and layer
    settings.
    """

    url: str
    layout: str
    mapping: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
    normalization: str
    layer_options: Mapping[str, object] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        # Entries are shared by every model built on the backbone: nobody may change their settings.
        object.__setattr__(self, "layer_options", MappingProxyType(dict(self.layer_options)))

    @property
    def mean(self) -> tuple[float, float, float]:
        return normalization_stats(self.normalization)[0]

    @property
    def std(self) -> tuple[float, float, float]:
        return normalization_stats(self.normalization)[1]


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """A backbone as the registry knows it.

    `build` is a keyword-only builder returning the `Backbone`; its keyword arguments are the backbone's model
    options (with their defaults), and one named `output_stride` marks a backbone that can dilate. The registry
    builds one model per head in `heads` (`"fcn"`, `"deeplabv3plus"`), named `<head>_<name>`. `weights` are its
    known ImageNet weights (None: none). `description` completes "DeepLabV3+ on ..." in the models' docstrings.
    """

    name: str
    build: Callable[..., Backbone]
    heads: tuple[str, ...]
    description: str
    weights: BackboneWeights | None = None
