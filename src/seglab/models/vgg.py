"""VGG16 (Simonyan & Zisserman 2015) convolutional part in torchvision's `features` layout."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from seglab.models.backbone import Backbone, BackboneEntry, BackboneWeights, FeatureInfo, without_keys

# Channels per block; every block ends with a 2x2 max-pool.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FIRST_TAPPED_BLOCK = 3  # FCN's skips start at block3 (stride 4)


class VGG16(Backbone):
    """VGG16's 13 convolutions and 5 max-pools, returning the FCN taps.

    `block3`, `block4`, `block5` are the ReLU outputs of each block's last conv (Keras' blockN_conv3, strides
    4, 8, 16); `pool5` is the last max-pool (stride 32). Module indices match torchvision's
    `vgg16().features`, so its ImageNet weights load by name.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, stride = 3, 1
        self._taps: dict[int, str] = {}
        feature_info = []
        for block_index, block in enumerate(VGG16_BLOCKS, start=1):
            for channels in block:
                layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = channels
            if block_index >= FIRST_TAPPED_BLOCK:
                self._taps[len(layers) - 1] = f"block{block_index}"
                feature_info.append(FeatureInfo(f"block{block_index}", in_channels, stride))
            layers.append(nn.MaxPool2d(2, 2))
            stride *= 2
        self._taps[len(layers) - 1] = "pool5"
        feature_info.append(FeatureInfo("pool5", in_channels, stride))
        self.features = nn.Sequential(*layers)
        self.feature_info = tuple(feature_info)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                features[self._taps[index]] = x
        return features


def vgg16() -> VGG16:
    """VGG16 (no options: it neither dilates nor has normalisation layers)."""
    return VGG16()


def map_torchvision_vgg16(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision `vgg16()`: `features.N.*` are ours as they are; `classifier.*` is the ImageNet head."""
    return without_keys(state, ("classifier.",))


# torchvision's file names end in the first hex digits of the file's sha256.
VGG16_ENTRY = BackboneEntry(
    name="vgg16", build=vgg16, heads=("fcn",), description="VGG16",
    weights=BackboneWeights(url="https://download.pytorch.org/models/vgg16-397923af.pth",
                            layout="torchvision vgg16", mapping=map_torchvision_vgg16, normalization="imagenet"),
)
