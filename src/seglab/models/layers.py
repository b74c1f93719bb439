"""Small building blocks shared by the backbones and heads."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


def relu() -> nn.Module:
    return nn.ReLU(inplace=True)


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation, with 'same' padding for odd kernels (dilation included)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer | None = relu,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        self.bn = norm_layer(out_channels)
        if act_layer is not None:
            self.act = act_layer()


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (+norm+act) then pointwise 1x1 (+norm+act), as in DeepLab's modified Xception.

    Attribute names (conv_dw, bn_dw, conv_pw, bn_pw) follow timm's aligned Xception so that its ImageNet
    weights map by name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActLayer = relu,
    ) -> None:
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.conv_dw = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            bias=False,
        )
        self.bn_dw = norm_layer(in_channels)
        self.act_dw = act_layer()
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pw = norm_layer(out_channels)
        self.act_pw = act_layer()

    def forward(self, x):
        x = self.act_dw(self.bn_dw(self.conv_dw(x)))
        return self.act_pw(self.bn_pw(self.conv_pw(x)))
