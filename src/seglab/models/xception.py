"""DeepLab's modified aligned Xception (Chen et al. 2018, https://arxiv.org/abs/1802.02611, section 3.2).

Compared with the original Xception: a deeper middle flow (16 blocks in the paper, 8 in seglab's shapes seed),
every max-pool replaced by a strided depthwise-separable convolution, and batch norm + ReLU after each depthwise
and pointwise convolution. The flows are an immutable table of block specs fed to one generic class.

DeepLab's released ImageNet checkpoints (ported to PyTorch by timm) arrange the ReLUs differently: one before
each separable conv and none inside it, except in blocks marked `start_with_relu=False`. `preactivation=True`
builds that arrangement, so those weights reproduce their features; the parameters are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.backbone import Backbone, FeatureInfo
from seglab.models.layers import ConvNormAct, NormLayer, SeparableConv2d, batch_norm, relu


@dataclass(frozen=True)
class XceptionBlockSpec:
    """Three separable convs; the last carries the stride. `residual=False` drops the shortcut (exit flow end).

    `start_with_relu` only matters in the pre-activation arrangement: False keeps BN + ReLU inside the convs.
    """

    in_channels: int
    out_channels: tuple[int, int, int]
    stride: int = 1
    residual: bool = True
    start_with_relu: bool = True


def xception_block_table(middle_blocks: int) -> tuple[XceptionBlockSpec, ...]:
    """Entry, middle and exit flows of the aligned Xception with `middle_blocks` middle-flow blocks."""
    entry = (
        XceptionBlockSpec(64, (128, 128, 128), stride=2),
        XceptionBlockSpec(128, (256, 256, 256), stride=2),
        XceptionBlockSpec(256, (728, 728, 728), stride=2),
    )
    middle = (XceptionBlockSpec(728, (728, 728, 728)),) * middle_blocks  # frozen specs: sharing is safe
    exit_flow = (
        XceptionBlockSpec(728, (728, 1024, 1024), stride=2),
        XceptionBlockSpec(1024, (1536, 1536, 2048), residual=False, start_with_relu=False),
    )
    return entry + middle + exit_flow


class XceptionBlock(nn.Module):
    def __init__(
        self, spec: XceptionBlockSpec, *, stride: int, dilation: int, norm_layer: NormLayer, preactivation: bool
    ) -> None:
        super().__init__()
        out_channels = spec.out_channels
        self.residual = spec.residual
        self.relu_before_convs = preactivation and spec.start_with_relu
        inner_act = nn.Identity if self.relu_before_convs else relu
        needs_projection = spec.residual and (out_channels[-1] != spec.in_channels or stride != 1)
        self.shortcut = (
            ConvNormAct(spec.in_channels, out_channels[-1], 1, stride=stride, norm_layer=norm_layer, act_layer=None)
            if needs_projection
            else None
        )
        in_channels = (spec.in_channels, *out_channels[:2])
        self.stack = nn.Sequential()
        for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels, strict=True), start=1):
            self.stack.add_module(
                f"conv{i}",
                SeparableConv2d(
                    c_in,
                    c_out,
                    stride=stride if i == 3 else 1,
                    dilation=dilation,
                    norm_layer=norm_layer,
                    act_layer=inner_act,
                ),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (block output, the feature entering the last conv): the latter is the pre-stride tap."""
        if self.relu_before_convs:
            before_last = F.relu(self.stack.conv2(F.relu(self.stack.conv1(F.relu(x)))))
        else:
            before_last = self.stack.conv2(self.stack.conv1(x))
        out = self.stack.conv3(before_last)
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return out, before_last


class AlignedXception(Backbone):
    """Aligned Xception backbone returning `low_level` (stride 4), `mid_level` (stride 8) and `out` features.

    `output_stride` (8 or 16) turns every stride beyond it into dilation, in the single loop below.
    `preactivation` selects the ReLU arrangement of DeepLab's released checkpoints (see the module docstring).
    `zero_init_residual` zeroes the last norm layer's scale in every residual block. `norm_layer` defaults to
    BatchNorm with eps 1e-3.
    """

    def __init__(
        self,
        blocks: tuple[XceptionBlockSpec, ...],
        *,
        output_stride: int = 16,
        preactivation: bool = False,
        zero_init_residual: bool = False,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if norm_layer is None:
            # eps 1e-3 as in the TensorFlow original, whose ImageNet weights timm ports.
            norm_layer = batch_norm(1e-3)

        self.stem = nn.Sequential(
            ConvNormAct(3, 32, 3, stride=2, norm_layer=norm_layer),
            ConvNormAct(32, 64, 3, norm_layer=norm_layer),
        )
        self.blocks = nn.Sequential()
        current_stride, dilation = 2, 1
        taps: dict[int, FeatureInfo] = {}
        for index, spec in enumerate(blocks):
            block_stride, block_dilation = spec.stride, dilation
            if spec.stride > 1:
                tap_name = {4: "low_level", 8: "mid_level"}.get(current_stride)
                if tap_name is not None and tap_name not in {t.name for t in taps.values()}:
                    taps[index] = FeatureInfo(tap_name, spec.out_channels[1], current_stride)
                if current_stride * spec.stride > output_stride:
                    dilation *= spec.stride
                    block_stride = 1
                else:
                    current_stride *= spec.stride
            self.blocks.add_module(
                str(index),
                XceptionBlock(
                    spec,
                    stride=block_stride,
                    dilation=block_dilation,
                    norm_layer=norm_layer,
                    preactivation=preactivation,
                ),
            )
        if zero_init_residual:
            # Each residual block starts as its shortcut (Goyal et al. 2017, torchvision's option of the same
            # name): the deep net begins as a shallow one, which trains faster from scratch.
            for block in self.blocks:
                if block.residual:
                    nn.init.zeros_(block.stack.conv3.bn_pw.weight)
        self._taps = {index: info.name for index, info in taps.items()}
        self.feature_info = (*taps.values(), FeatureInfo("out", blocks[-1].out_channels[-1], current_stride))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        x = self.stem(x)
        for index, block in enumerate(self.blocks):
            x, before_last = block(x)
            if index in self._taps:
                features[self._taps[index]] = before_last
        features["out"] = x
        return features
