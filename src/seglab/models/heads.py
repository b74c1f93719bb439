"""Segmentation heads: the FCN upsampling decoder (seed 000) and DeepLabV3+'s ASPP + decoder (seed 003)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.backbone import FeatureInfo
from seglab.models.layers import ConvNormAct, SeparableConv2d, memory_format_of


class UpsampleStage(nn.Sequential):
    """Learned 2x upsampling (3x3 stride-2 transposed conv + ReLU) then a 3x3 conv + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class FCNHead(nn.Module):
    """FCN decoder: from the deepest feature, repeated 2x upsampling with the skip features added on the way.

    The stage widths are the skip features' channels (512, 512, 256 for VGG16), then `final_channels`, then a
    last transposed conv to `num_classes` and a 3x3 classifier at full resolution. The input must be padded to
    a multiple of the deepest stride so that every 2x step lands exactly on its skip's size.
    """

    def __init__(
        self,
        deepest: FeatureInfo,
        skips: Sequence[FeatureInfo],
        num_classes: int,
        *,
        final_channels: int = 128,
    ) -> None:
        super().__init__()
        self.deepest = deepest.name
        self.skip_names = tuple(skip.name for skip in skips)
        stride, channels = deepest.stride, deepest.channels
        self.stages = nn.ModuleList()
        for skip in skips:
            if skip.stride * 2 != stride:
                raise ValueError(f"skip {skip.name!r} has stride {skip.stride}, expected {stride // 2}")
            self.stages.append(UpsampleStage(channels, skip.channels))
            stride, channels = skip.stride, skip.channels
        # From the shallowest skip down to stride 2, then the class layer makes the last 2x step.
        while stride > 2:
            self.stages.append(UpsampleStage(channels, final_channels))
            stride, channels = stride // 2, final_channels
        # No ReLU after this transposed conv (the seed has one): on a layer only num_classes wide it can
        # silence a class's channel for good.
        self.to_classes = nn.ConvTranspose2d(channels, num_classes, 3, stride=2, padding=1, output_padding=1)
        self.classifier = nn.Conv2d(num_classes, num_classes, 3, padding=1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.deepest]
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index < len(self.skip_names):
                x = x + features[self.skip_names[index]]
        return self.classifier(self.to_classes(x))


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """DeepLab's atrous rates: (6, 12, 18) at output stride 16, scaled inversely with the stride (12/24/36 at 8,
    3/6/9 at 32)."""
    low, middle, high = (max(1, round(rate * 16 / output_stride)) for rate in (6, 12, 18))
    return low, middle, high


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average pool, 1x1 conv, broadcast back to the feature's size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), ConvNormAct(in_channels, out_channels, 1))

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # nn.Sequential's parameter name
        # Bilinear upsampling of a 1x1 map is a broadcast. Materialised in the input's memory format, so that
        # the concatenation with the other branches (and the projection after it) stays channels-last.
        pooled = super().forward(input).expand(-1, -1, *input.shape[-2:])
        return pooled.contiguous(memory_format=memory_format_of(input))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three atrous separable 3x3 branches, image pooling; 1x1 fusion."""

    def __init__(
        self, in_channels: int, rates: Sequence[int], *, out_channels: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList(
            [
                ConvNormAct(in_channels, out_channels, 1),
                *(SeparableConv2d(in_channels, out_channels, dilation=rate) for rate in self.rates),
                ASPPPooling(in_channels, out_channels),
            ]
        )
        self.project = nn.Sequential(
            ConvNormAct(len(self.branches) * out_channels, out_channels, 1),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ head: ASPP on the deep feature, fused at the low-level feature's resolution.

    Decoder: 1x1 projection of the low-level feature, concatenation with the upsampled ASPP output, two 3x3
    separable convs and a 1x1 classifier. Output is at the low-level feature's stride (4).
    """

    def __init__(
        self,
        deep: FeatureInfo,
        low_level: FeatureInfo,
        num_classes: int,
        *,
        atrous_rates: Sequence[int],
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
    ) -> None:
        super().__init__()
        self.deep, self.low_level = deep.name, low_level.name
        self.aspp = ASPP(deep.channels, atrous_rates, out_channels=aspp_channels)
        self.low_level_projection = ConvNormAct(low_level.channels, low_level_channels, 1)
        self.fuse = nn.Sequential(
            SeparableConv2d(aspp_channels + low_level_channels, decoder_channels),
            SeparableConv2d(decoder_channels, decoder_channels),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.low_level_projection(features[self.low_level])
        deep = self.aspp(features[self.deep])
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([deep, low], dim=1)))
