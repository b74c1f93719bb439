"""The explicit registry of model factories: `build_model(name, num_classes=..., **options)`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn

from seglab.errors import ConfigError
from seglab.models.heads import DeepLabV3PlusHead, FCNHead, aspp_rates
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


def _deeplabv3plus_xception(middle_blocks: int, description: str) -> Callable[..., SegmentationModel]:
    def factory(
        *,
        num_classes: int,
        output_stride: int = 16,
        atrous_rates: Sequence[int] | None = None,
        freeze_backbone: bool = False,
        preactivation: bool = False,
        zero_init_residual: bool = False,
    ) -> SegmentationModel:
        _check_output_stride(output_stride)
        backbone = AlignedXception(
            xception_block_table(middle_blocks),
            output_stride=output_stride,
            preactivation=preactivation,
            zero_init_residual=zero_init_residual,
        )
        return _deeplabv3plus(backbone, num_classes, output_stride, atrous_rates, freeze_backbone)

    factory.__doc__ = (
        f"DeepLabV3+ (Chen et al. 2018, https://arxiv.org/abs/1802.02611) on aligned Xception, {description}.\n\n"
        "`preactivation=True` arranges the backbone's ReLUs as DeepLab's released ImageNet checkpoints (timm's "
        "`xception41`/`xception65`) do; use it with `pretrained_backbone`. `zero_init_residual=True` starts every "
        "residual block as its shortcut (faster training from scratch)."
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
) -> SegmentationModel:
    """DeepLabV3+ (https://arxiv.org/abs/1802.02611) on ResNet-50, low-level feature from layer1.

    `zero_init_residual=True` starts every bottleneck as its shortcut (faster training from scratch).
    """
    _check_output_stride(output_stride)
    backbone = ResNet((3, 4, 6, 3), output_stride=output_stride, zero_init_residual=zero_init_residual)
    return _deeplabv3plus(backbone, num_classes, output_stride, atrous_rates, freeze_backbone)


MODEL_FACTORIES: dict[str, Callable[..., SegmentationModel]] = {
    "fcn_vgg16": fcn_vgg16,
    "deeplabv3plus_xception41": deeplabv3plus_xception41,
    "deeplabv3plus_xception65": deeplabv3plus_xception65,
    "deeplabv3plus_resnet50": deeplabv3plus_resnet50,
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
        pretrained_backbone: a local file or an http(s) URL of ImageNet weights in torchvision's (VGG16,
            ResNet-50) or timm's (aligned Xception) state-dict layout; URLs are downloaded to the cache.
        **options: the model's own options (see `model_options(name)`), e.g. `output_stride=8`.
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
    model = factory(num_classes=num_classes, **options)
    if pretrained_backbone is not None:
        from seglab.models.pretrained import load_backbone_weights

        load_backbone_weights(model.backbone, pretrained_backbone)
    return model
