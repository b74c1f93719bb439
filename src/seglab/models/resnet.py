"""ResNet-50 (He et al. 2016) in torchvision's layout, so that torchvision's ImageNet state dict loads by name.

Bottleneck v1.5 (stride on the 3x3 conv). Output stride 16 or 8 dilates layer4, or layer3 and layer4.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.models.backbone import Backbone, FeatureInfo
from seglab.models.layers import NormLayer


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        *,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """ResNet backbone returning `low_level` (layer1, stride 4), `mid_level` (layer2, stride 8) and `out`."""

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        *,
        output_stride: int = 16,
        zero_init_residual: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        in_channels, current_stride, dilation = 64, 4, 1
        strides_out = []
        for index, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True), start=1):
            stride = 1 if index == 1 else 2
            first_dilation = dilation
            if stride > 1 and current_stride * stride > output_stride:
                dilation *= stride
                stride = 1
            current_stride *= stride
            strides_out.append(current_stride)
            downsample = None
            if stride != 1 or in_channels != width * Bottleneck.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(in_channels, width * Bottleneck.expansion, 1, stride=stride, bias=False),
                    norm_layer(width * Bottleneck.expansion),
                )
            layer = [
                Bottleneck(
                    in_channels,
                    width,
                    stride=stride,
                    dilation=first_dilation,
                    downsample=downsample,
                    norm_layer=norm_layer,
                )
            ]
            in_channels = width * Bottleneck.expansion
            layer += [
                Bottleneck(in_channels, width, stride=1, dilation=dilation, downsample=None, norm_layer=norm_layer)
                for _ in range(blocks - 1)
            ]
            setattr(self, f"layer{index}", nn.Sequential(*layer))
        if zero_init_residual:
            # Every bottleneck starts as its shortcut, as torchvision's option of the same name does.
            for block in self.modules():
                if isinstance(block, Bottleneck):
                    nn.init.zeros_(block.bn3.weight)

        self.feature_info = (
            FeatureInfo("low_level", 256, strides_out[0]),
            FeatureInfo("mid_level", 512, strides_out[1]),
            FeatureInfo("out", 2048, strides_out[3]),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        mid = self.layer2(low)
        out = self.layer4(self.layer3(mid))
        return {"low_level": low, "mid_level": mid, "out": out}
