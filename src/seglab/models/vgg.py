"""VGG16 (Simonyan & Zisserman 2015) convolutional part in torchvision's `features` layout."""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.backbone import Backbone, FeatureInfo

# Channels per block; every block ends with a 2x2 max-pool.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16(Backbone):
    """VGG16's 13 convolutions and 5 max-pools, returning the FCN taps.

    `block3`, `block4`, `block5` are the ReLU outputs of each block's last conv (Keras' blockN_conv3, strides
    4, 8, 16); `pool5` is the last max-pool (stride 32). Module indices match torchvision's
    `vgg16().features`, so its ImageNet weights load by name.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        self._taps: dict[int, str] = {}
        for block_index, block in enumerate(VGG16_BLOCKS, start=1):
            for channels in block:
                layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = channels
            if block_index >= 3:
                self._taps[len(layers) - 1] = f"block{block_index}"
            layers.append(nn.MaxPool2d(2, 2))
        self._taps[len(layers) - 1] = "pool5"
        self.features = nn.Sequential(*layers)
        self.feature_info = (
            FeatureInfo("block3", 256, 4),
            FeatureInfo("block4", 512, 8),
            FeatureInfo("block5", 512, 16),
            FeatureInfo("pool5", 512, 32),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                features[self._taps[index]] = x
        return features
