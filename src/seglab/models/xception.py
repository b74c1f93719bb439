"""DeepLab's modified aligned Xception (Chen et al. 2018, https://arxiv.org/abs/1802.02611, section 3.2).

Compared with the original Xception: a deeper middle flow (16 blocks in the paper, 8 in seglab's shapes seed),
every max-pool replaced by a strided depthwise-separable convolution, and batch norm + ReLU after each depthwise
and pointwise convolution. The flows are an immutable table of block specs fed to one generic class.

DeepLab's released ImageNet checkpoints (ported to PyTorch by timm) arrange the ReLUs differently: each block
starts with a ReLU before each separable conv and has none inside it, except in blocks marked
`start_with_relu=False`. `start_with_relu=True` (timm's name, from its `XceptionModule`) builds that arrangement,
so those weights reproduce their features; the parameters are the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.backbone import Backbone, BackboneEntry, BackboneWeights, FeatureInfo, dilated_stages, without_keys
from seglab.models.layers import ConvNormAct, NormLayer, SeparableConv2d, batch_norm, relu


@dataclass(frozen=True)
class XceptionBlockSpec:
    """Three separable convs; the last carries the stride. `residual=False` drops the shortcut (exit flow end).

    `start_with_relu` only matters in the backbone's `start_with_relu` arrangement: False keeps BN + ReLU inside
    the convs, as timm's block table marks the exit flow's last block.
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
        self, spec: XceptionBlockSpec, *, stride: int, dilation: int, norm_layer: NormLayer, start_with_relu: bool
    ) -> None:
        super().__init__()
        out_channels = spec.out_channels
        self.residual = spec.residual
        self.relu_before_convs = start_with_relu and spec.start_with_relu
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
        conv1, conv2, conv3 = self.stack
        before_last = F.relu(conv2(F.relu(conv1(F.relu(x))))) if self.relu_before_convs else conv2(conv1(x))
        out = conv3(before_last)
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return out, before_last


class AlignedXception(Backbone):
    """Aligned Xception backbone returning `low_level` (stride 4), `mid_level` (stride 8) and `out` features.

    `output_stride` (8 or 16; 32 keeps every stride) turns every stride beyond it into dilation
    (`seglab.models.backbone.dilated_stages`).
    `start_with_relu` selects the ReLU arrangement of DeepLab's released checkpoints (see the module docstring).
    `zero_init_residual` zeroes the last norm layer's scale in every residual block. `norm_layer` defaults to
    BatchNorm with eps 1e-3.
    """

    def __init__(
        self,
        blocks: tuple[XceptionBlockSpec, ...],
        *,
        output_stride: int = 16,
        start_with_relu: bool = False,
        zero_init_residual: bool = False,
        norm_layer: NormLayer | None = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            # eps 1e-3 as in the TensorFlow original, whose ImageNet weights timm ports.
            norm_layer = batch_norm(1e-3)

        self.stem = nn.Sequential(
            ConvNormAct(3, 32, 3, stride=2, norm_layer=norm_layer),
            ConvNormAct(32, 64, 3, norm_layer=norm_layer),
        )
        # A list, not a Sequential: each block returns (output, pre-stride tap). Keys stay `blocks.N.*` (timm's).
        self.blocks = nn.ModuleList()
        stages = dilated_stages(tuple(spec.stride for spec in blocks), output_stride=output_stride, stem_stride=2)
        taps: dict[int, FeatureInfo] = {}
        for index, (spec, stage) in enumerate(zip(blocks, stages, strict=True)):
            # The feature entering a block's strided conv is the last one at its stride: DeepLab's taps.
            tap_name = {4: "low_level", 8: "mid_level"}.get(stage.input_stride)
            if spec.stride > 1 and tap_name is not None and tap_name not in {t.name for t in taps.values()}:
                taps[index] = FeatureInfo(tap_name, spec.out_channels[1], stage.input_stride)
            self.blocks.append(
                XceptionBlock(spec, stride=stage.stride, dilation=stage.dilation, norm_layer=norm_layer,
                              start_with_relu=start_with_relu)
            )
        if zero_init_residual:
            # Each residual block starts as its shortcut (Goyal et al. 2017, torchvision's option of the same
            # name): the deep net begins as a shallow one, which trains faster from scratch.
            for block in self.blocks:
                if isinstance(block, XceptionBlock) and block.residual:
                    nn.init.zeros_(block.stack.get_submodule("conv3.bn_pw").get_parameter("weight"))
        self._taps = {index: info.name for index, info in taps.items()}
        self.feature_info = (*taps.values(), FeatureInfo("out", blocks[-1].out_channels[-1], stages[-1].output_stride))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        x = self.stem(x)
        for index, block in enumerate(self.blocks):
            x, before_last = block(x)
            if index in self._taps:
                features[self._taps[index]] = before_last
        features["out"] = x
        return features


def map_timm_xception(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `xception41`/`xception65`: stem/blocks are ours as they are; `head.*` (and old `fc.*`) is the head."""
    return without_keys(state, ("head.", "fc."))


_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights"


def _xception_entry(name: str, middle_blocks: int, description: str, weights_file: str) -> BackboneEntry:
    def build(*, output_stride: int, start_with_relu: bool = False, zero_init_residual: bool = False,
              norm_eps: float = 1e-3) -> AlignedXception:
        return AlignedXception(xception_block_table(middle_blocks), output_stride=output_stride,
                               start_with_relu=start_with_relu, zero_init_residual=zero_init_residual,
                               norm_layer=batch_norm(norm_eps))

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"Aligned Xception with {middle_blocks} middle-flow blocks. `start_with_relu=True` arranges the ReLUs as "
        f"DeepLab's released ImageNet checkpoints (timm's `{name}`) do; use it with `pretrained_backbone`. "
        "`zero_init_residual=True` starts every residual block as its shortcut (faster training from scratch). "
        "`norm_eps` is the BatchNorm eps: 1e-3 as in the TensorFlow original, which those weights need."
    )
    # timm builds its ports of DeepLab's TensorFlow checkpoints with BatchNorm eps 1e-3 and feeds them inputs in
    # [-1, 1] (its IMAGENET_INCEPTION_MEAN/STD).
    weights = BackboneWeights(url=f"{_TIMM_RELEASES}/{weights_file}", layout=f"timm {name}",
                              mapping=map_timm_xception, normalization="symmetric", layer_options={"norm_eps": 1e-3})
    return BackboneEntry(name=name, build=build, heads=("deeplabv3plus",), description=description, weights=weights)


XCEPTION41_ENTRY = _xception_entry("xception41", 8, "aligned Xception, middle flow 8 (seglab's shapes seed)",
                                   "tf_xception_41-e6439c97.pth")
XCEPTION65_ENTRY = _xception_entry("xception65", 16, "aligned Xception, middle flow 16 (the paper's)",
                                   "tf_xception_65-c9ae96e8.pth")
