"""What every backbone publishes: a dict of named feature maps, with their channels and strides declared."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map a backbone returns: its key, channel count and stride relative to the input."""

    name: str
    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class: `forward(x)` returns `{info.name: tensor for info in self.feature_info}`.

    Heads read features by name and size themselves from `feature_info`, never from hard-coded channels.
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
