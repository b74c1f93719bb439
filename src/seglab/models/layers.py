"""Small building blocks shared by the backbones and heads."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import ConfigError

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


def relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def batch_norm(eps: float) -> NormLayer:
    """A `NormLayer` building `nn.BatchNorm2d(channels, eps=eps)`: pretrained weights fix the eps they need."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ConfigError(f"norm_eps must be a positive number, got {eps!r}")
    return functools.partial(nn.BatchNorm2d, eps=eps)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for an NHWC-strided `(N, C, H, W)` tensor, else contiguous_format: the format a layer's
    output should keep so that the convolutions after it get what they were given."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation, with 'same' padding for odd kernels (dilation included)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
                 dilation: int = 1, norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer | None = relu) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        self.bn = norm_layer(out_channels)
        if act_layer is not None:
            self.act = act_layer()


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution (groups == channels) that takes faster, equivalent routes on a CPU.

    oneDNN's CPU kernels run two depthwise cases of this model at a fraction of their usual speed (2 cores,
    torch 2.13, benchmarks/results/cpu_kernels.md): dilated ones, and strided ones in bfloat16. A dilated
    convolution equals an undilated one run over the `dilation x dilation` interleaved sub-grids of its input
    stacked into the batch (zero padding included, so results agree to float rounding), or a per-channel scale
    when the dilation reaches past the map; a strided one runs in float32 with autocast suspended. Elsewhere,
    and on other devices, it is a plain `nn.Conv2d`.
    """

    def __init__(self, channels: int, kernel_size: int = 3, *, stride: int = 1, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(channels, channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pyright: ignore[reportIncompatibleMethodOverride]
        # An exported graph would keep only the route its example input took (the choice below is Python on
        # the map's size): export the plain convolution, right at every size (`seglab export`'s parity check).
        if x.device.type != "cpu" or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
            return super().forward(x)
        dilation, (height, width) = self.dilation[0], x.shape[-2:]
        autocast_dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        if self.stride == (1, 1) and dilation >= max(height, width):
            # Every tap but the centre falls on zero padding (ASPP's large rates on small maps): a per-channel scale.
            centre = self.kernel_size[0] // 2
            dtype = autocast_dtype or x.dtype
            y = x.to(dtype) * self.weight[:, :, centre, centre].reshape(1, -1, 1, 1).to(dtype)
            # A bias appears when inference folds a BatchNorm into this layer (`seglab.inference.fold`).
            return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1).to(dtype)
        if self.stride == (1, 1) and dilation > 1 and min(-(-height // dilation), -(-width // dilation)) \
                >= self.kernel_size[0]:
            return self._dilated_as_batched(x, dilation)
        if self.stride != (1, 1) and autocast_dtype is not None:
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float()).to(autocast_dtype)
        return super().forward(x)

    def _dilated_as_batched(self, x: torch.Tensor, dilation: int) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % dilation, -width % dilation
        memory_format = memory_format_of(x)
        if pad_h or pad_w:
            # Zeros below and right of the map, where the convolution's own zero padding would be: the sub-grids
            # then have equal sizes, and cropping gives the dilated convolution exactly.
            padded = F.pad(x, (0, pad_w, 0, pad_h)).contiguous(memory_format=memory_format)
            y = self._dilated_as_batched(padded, dilation)[..., :height, :width]
            return y.contiguous(memory_format=memory_format)
        n, c, h, w = x.shape
        h_sub, w_sub = h // dilation, w // dilation
        padding = (self.kernel_size[0] - 1) // 2
        if memory_format == torch.channels_last:
            # NHWC in, NHWC out: the same regrouping along the other axes keeps every copy in channels-last
            # order, so the convolutions after this one get the memory format they were given.
            sub_grids = x.permute(0, 2, 3, 1).reshape(n, h_sub, dilation, w_sub, dilation, c)
            sub_grids = sub_grids.permute(0, 2, 4, 1, 3, 5).reshape(n * dilation * dilation, h_sub, w_sub, c)
            y = F.conv2d(sub_grids.permute(0, 3, 1, 2), self.weight, self.bias, 1, padding, 1, self.groups)
            y = y.permute(0, 2, 3, 1).reshape(n, dilation, dilation, h_sub, w_sub, c).permute(0, 3, 1, 4, 2, 5)
            return y.reshape(n, h, w, c).permute(0, 3, 1, 2)
        sub_grids = x.reshape(n, c, h_sub, dilation, w_sub, dilation).permute(0, 3, 5, 1, 2, 4)
        sub_grids = sub_grids.reshape(n * dilation * dilation, c, h_sub, w_sub)
        y = F.conv2d(sub_grids, self.weight, self.bias, 1, padding, 1, self.groups)
        y = y.reshape(n, dilation, dilation, c, h_sub, w_sub).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c, h, w)


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (+norm+act) then pointwise 1x1 (+norm+act), as in DeepLab's modified Xception.

    Attribute names (conv_dw, bn_dw, conv_pw, bn_pw) follow timm's aligned Xception so that its ImageNet
    weights map by name.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
                 dilation: int = 1, norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = relu) -> None:
        super().__init__()
        self.conv_dw = DepthwiseConv2d(in_channels, kernel_size, stride=stride, dilation=dilation)
        self.bn_dw = norm_layer(in_channels)
        self.act_dw = act_layer()
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pw = norm_layer(out_channels)
        self.act_pw = act_layer()

    def forward(self, x):
        x = self.act_dw(self.bn_dw(self.conv_dw(x)))
        return self.act_pw(self.bn_pw(self.conv_pw(x)))
