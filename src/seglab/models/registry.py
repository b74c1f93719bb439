"""The explicit registry of model factories: `build_model(name, num_classes=..., **options)`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from seglab.errors import ConfigError
from seglab.models.heads import DeepLabV3PlusHead, FCNHead, aspp_rates
from seglab.models.layers import batch_norm
from seglab.models.resnet import ResNet
from seglab.models.segmenter import SegmentationModel
from seglab.models.vgg import VGG16
from seglab.models.xception import AlignedXception, xception_block_table


def fcn_vgg16(*, num_classes: int, freeze_backbone: bool = False) -> SegmentationModel:
    """FCN on VGG16 (Long et al. 2015, https://arxiv.org/abs/1411.4038) as in seglab's Pet seed.

    block5_pool is upsampled by learned transposed convolutions, adding block5_conv3, block4_conv3 and
    block3_conv3 on the way, to full resolution.
    """
    backbone = VGG16()
    head = FCNHead(
        backbone.feature("pool5"),
        [backbone.feature(name) for name in ("block5", "block4", "block3")],
        num_classes,
    )
    return SegmentationModel(backbone, head, input_multiple=32, freeze_backbone=freeze_backbone)


def _deeplabv3plus(
    backbone: AlignedXception | ResNet,
    num_classes: int,
    output_stride: int,
    atrous_rates: Sequence[int] | None,
    freeze_backbone: bool,
) -> SegmentationModel:
    rates = aspp_rates(output_stride) if atrous_rates is None else tuple(atrous_rates)
    if len(rates) != 3 or any(int(r) < 1 for r in rates):
        raise ConfigError(f"atrous_rates must be three positive integers, got {atrous_rates!r}")
    head = DeepLabV3PlusHead(backbone.feature("out"), backbone.feature("low_level"), num_classes, atrous_rates=rates)
    return SegmentationModel(backbone, head, freeze_backbone=freeze_backbone)


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in (8, 16):
        raise ConfigError(f"output_stride must be 8 or 16, got {output_stride!r}")


def _check_norm_eps(norm_eps: float) -> None:
    if isinstance(norm_eps, bool) or not isinstance(norm_eps, (int, float)) or not norm_eps > 0:
        raise ConfigError(f"norm_eps must be a positive number, got {norm_eps!r}")


def _deeplabv3plus_xception(middle_blocks: int, description: str) -> Callable[..., SegmentationModel]:
    def factory(
        *,
        num_classes: int,
        output_stride: int = 16,
        atrous_rates: Sequence[int] | None = None,
        freeze_backbone: bool = False,
        preactivation: bool = False,
        zero_init_residual: bool = False,
        norm_eps: float = 1e-3,
    ) -> SegmentationModel:
        _check_output_stride(output_stride)
        _check_norm_eps(norm_eps)
        backbone = AlignedXception(
            xception_block_table(middle_blocks),
            output_stride=output_stride,
            preactivation=preactivation,
            zero_init_residual=zero_init_residual,
            norm_layer=batch_norm(norm_eps),
        )
        return _deeplabv3plus(backbone, num_classes, output_stride, atrous_rates, freeze_backbone)

    factory.__doc__ = (
        f"DeepLabV3+ (Chen et al. 2018, https://arxiv.org/abs/1802.02611) on aligned Xception, {description}.\n\n"
        "`preactivation=True` arranges the backbone's ReLUs as DeepLab's released ImageNet checkpoints (timm's "
        "`xception41`/`xception65`) do; use it with `pretrained_backbone`. `zero_init_residual=True` starts every "
        "residual block as its shortcut (faster training from scratch). `norm_eps` is the backbone's BatchNorm eps: "
        "1e-3 as in the TensorFlow original, which those weights need."
    )
    return factory


deeplabv3plus_xception41 = _deeplabv3plus_xception(8, "middle flow 8 (seglab's shapes seed)")
deeplabv3plus_xception65 = _deeplabv3plus_xception(16, "middle flow 16 (the paper's)")


def deeplabv3plus_resnet50(
    *,
    num_classes: int,
    output_stride: int = 16,
    atrous_rates: Sequence[int] | None = None,
    freeze_backbone: bool = False,
    zero_init_residual: bool = False,
    norm_eps: float = 1e-5,
) -> SegmentationModel:
    """DeepLabV3+ (https://arxiv.org/abs/1802.02611) on ResNet-50, low-level feature from layer1.

    `zero_init_residual=True` starts every bottleneck as its shortcut (faster training from scratch).
    `norm_eps` is the backbone's BatchNorm eps (torch's default, as torchvision's ImageNet weights use).
    """
    _check_output_stride(output_stride)
    _check_norm_eps(norm_eps)
    backbone = ResNet((3, 4, 6, 3), output_stride=output_stride, zero_init_residual=zero_init_residual,
                      norm_layer=batch_norm(norm_eps))
    return _deeplabv3plus(backbone, num_classes, output_stride, atrous_rates, freeze_backbone)


MODEL_FACTORIES: dict[str, Callable[..., SegmentationModel]] = {
    "fcn_vgg16": fcn_vgg16,
    "deeplabv3plus_xception41": deeplabv3plus_xception41,
    "deeplabv3plus_xception65": deeplabv3plus_xception65,
    "deeplabv3plus_resnet50": deeplabv3plus_resnet50,
}

# The backbone each model is built on, as named in `seglab.models.pretrained.BACKBONE_WEIGHTS`: the weights that
# `pretrained_backbone="imagenet"` fetches, and the normalisation and layer settings any weights given for it need.
MODEL_BACKBONES: dict[str, str] = {
    "fcn_vgg16": "vgg16",
    "deeplabv3plus_xception41": "xception41",
    "deeplabv3plus_xception65": "xception65",
    "deeplabv3plus_resnet50": "resnet50",
}


def list_models() -> list[str]:
    """Names accepted by `build_model`, sorted."""
    return sorted(MODEL_FACTORIES)


def model_options(name: str) -> dict[str, object]:
    """The keyword options of a model (besides num_classes) with their defaults."""
    factory = _factory(name)
    return {p.name: p.default for p in inspect.signature(factory).parameters.values() if p.name != "num_classes"}


def _factory(name: str) -> Callable[..., SegmentationModel]:
    try:
        return MODEL_FACTORIES[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def build_model(
    name: str,
    *,
    num_classes: int,
    pretrained_backbone: str | Path | None = None,
    **options: object,
) -> nn.Module:
    """Builds a registered segmentation model.

    Args:
        name: one of `list_models()`.
        num_classes: output channels of the logits.
        pretrained_backbone: "imagenet" for the backbone's known weights, or a local file or an http(s) URL
            of weights in the same family's state-dict layout (torchvision's VGG16/ResNet-50, timm's aligned
            Xception), trained with the same normalisation and layer settings; see
            `seglab.models.pretrained.backbone_weights(name)`. URLs are downloaded to the cache.
        **options: the model's own options (see `model_options(name)`), e.g. `output_stride=8`; with
            `pretrained_backbone`, the weights' layer settings (e.g. `norm_eps`) may not be given other values.
    """
    factory = _factory(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}"
        )
    if pretrained_backbone is None:
        return factory(num_classes=num_classes, **options)
    from seglab.models.pretrained import backbone_weights, load_backbone_weights

    weights = backbone_weights(name)
    conflicting = {key: options[key] for key, value in weights.layer_options.items()
                   if key in options and options[key] != value}
    if conflicting:
        needed = ", ".join(f"{key}={weights.layer_options[key]!r}" for key in conflicting)
        given = ", ".join(f"{key}={value!r}" for key, value in conflicting.items())
        raise ConfigError(f"{name}'s pretrained backbone ({weights.layout} layout) needs {needed}, got {given}")
    model = factory(num_classes=num_classes, **options)
    load_backbone_weights(model.backbone, pretrained_backbone, weights)
    return model
