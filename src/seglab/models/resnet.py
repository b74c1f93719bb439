"""ResNet-50 (He et al. 2016) in torchvision's layout, so that torchvision's ImageNet state dict loads by name.

Bottleneck v1.5 (stride on the 3x3 conv). Output stride 16 or 8 dilates layer4, or layer3 and layer4.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from seglab.models.backbone import Backbone, BackboneEntry, BackboneWeights, FeatureInfo, dilated_stages, without_keys
from seglab.models.layers import NormLayer, batch_norm

LAYER_WIDTHS = (64, 128, 256, 512)  # bottleneck widths of layer1..layer4; outputs are 4x wider
LAYER_STRIDES = (1, 2, 2, 2)  # after the stem's stride 4
LAYER_FEATURES = {1: "low_level", 2: "mid_level", 4: "out"}  # the features published, by layer


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

    # Built in a loop by setattr (torchvision's names, so its weights load by key).
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        *,
        output_stride: int = 16,
        zero_init_residual: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        in_channels = 64
        stages = dilated_stages(LAYER_STRIDES, output_stride=output_stride, stem_stride=4)
        feature_info = []
        for index, (blocks, width, stage) in enumerate(zip(layers, LAYER_WIDTHS, stages, strict=True), start=1):
            out_channels = width * Bottleneck.expansion
            downsample = None
            if stage.stride != 1 or in_channels != out_channels:
                downsample = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stage.stride, bias=False),
                    norm_layer(out_channels),
                )
            layer = [Bottleneck(in_channels, width, stride=stage.stride, dilation=stage.dilation,
                                downsample=downsample, norm_layer=norm_layer)]
            layer += [
                Bottleneck(out_channels, width, stride=1, dilation=stage.later_dilation, downsample=None,
                           norm_layer=norm_layer)
                for _ in range(blocks - 1)
            ]
            in_channels = out_channels
            setattr(self, f"layer{index}", nn.Sequential(*layer))
            if index in LAYER_FEATURES:
                feature_info.append(FeatureInfo(LAYER_FEATURES[index], out_channels, stage.output_stride))
        if zero_init_residual:
            # Every bottleneck starts as its shortcut, as torchvision's option of the same name does.
            for block in self.modules():
                if isinstance(block, Bottleneck):
                    nn.init.zeros_(block.bn3.get_parameter("weight"))
        self.feature_info = tuple(feature_info)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        mid = self.layer2(low)
        out = self.layer4(self.layer3(mid))
        return {"low_level": low, "mid_level": mid, "out": out}


def resnet50(*, output_stride: int, zero_init_residual: bool = False, norm_eps: float = 1e-5) -> ResNet:
    """ResNet-50 (3, 4, 6, 3 bottlenecks). `zero_init_residual=True` starts every bottleneck as its shortcut
    (faster training from scratch). `norm_eps` is the BatchNorm eps (torch's default, as torchvision's ImageNet
    weights use)."""
    return ResNet((3, 4, 6, 3), output_stride=output_stride, zero_init_residual=zero_init_residual,
                  norm_layer=batch_norm(norm_eps))


def map_torchvision_resnet(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision `resnet50()`: conv1/bn1/layer1-4 are ours as they are; `fc.*` is the ImageNet head."""
    return without_keys(state, ("fc.",))


# torchvision's file names end in the first hex digits of the file's sha256.
RESNET50_ENTRY = BackboneEntry(
    name="resnet50", build=resnet50, heads=("deeplabv3plus",),
    description="ResNet-50, low-level feature from layer1",
    weights=BackboneWeights(url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
                            layout="torchvision resnet50", mapping=map_torchvision_resnet, normalization="imagenet"),
)
