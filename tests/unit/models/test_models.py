"""Every registered model on tiny inputs, plus per-component checks of strides, ASPP rates and freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seglab.errors import ConfigError
from seglab.models import build_model, count_parameters, list_models, model_options
from seglab.models.heads import ASPP

ODD_SIZE = (37, 51)  # neither a multiple of 32 nor square


def test_registry_lists_the_four_architectures():
    assert list_models() == [
        "deeplabv3plus_resnet50",
        "deeplabv3plus_xception41",
        "deeplabv3plus_xception65",
        "fcn_vgg16",
    ]


@pytest.mark.parametrize("name", list_models())
def test_model_maps_odd_sized_input_to_same_size_finite_logits_with_gradients(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=3)
    model.train()
    images = torch.randn(2, 3, *ODD_SIZE)
    logits = model(images)
    assert logits.shape == (2, 3, *ODD_SIZE)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    without_grad = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert without_grad == []


@pytest.mark.parametrize("name", list_models())
def test_eval_mode_is_deterministic(name):
    model = build_model(name, num_classes=2).eval()
    images = torch.randn(1, 3, 33, 40)
    with torch.no_grad():
        assert torch.equal(model(images), model(images))


def test_97x131_input_works_for_fcn():
    model = build_model("fcn_vgg16", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 131)).shape == (1, 3, 97, 131)


@pytest.mark.parametrize(
    ("output_stride", "expected"),
    [(16, {"low_level": 4, "mid_level": 8, "out": 16}), (8, {"low_level": 4, "mid_level": 8, "out": 8}),
     (32, {"low_level": 4, "mid_level": 8, "out": 32})],
)
def test_xception_feature_strides(output_stride, expected):
    model = build_model("deeplabv3plus_xception41", num_classes=2, output_stride=output_stride).eval()
    size = 64
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, size, size))
    measured = {name: size // f.shape[-1] for name, f in features.items()}
    assert measured == expected
    declared = {info.name: info.stride for info in model.backbone.feature_info}
    assert declared == expected
    channels = {info.name: info.channels for info in model.backbone.feature_info}
    assert (
        {name: f.shape[1] for name, f in features.items()}
        == channels
        == {
            "low_level": 256,
            "mid_level": 728,
            "out": 2048,
        }
    )


@pytest.mark.parametrize(("output_stride", "stride_out"), [(16, 16), (8, 8)])
def test_resnet_output_stride(output_stride, stride_out):
    model = build_model("deeplabv3plus_resnet50", num_classes=2, output_stride=output_stride).eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 64, 64))
    assert 64 // features["out"].shape[-1] == stride_out
    assert 64 // features["low_level"].shape[-1] == 4


def _dilations(aspp: ASPP) -> list[int]:
    return [branch.conv_dw.dilation[0] for branch in aspp.branches[1:4]]


@pytest.mark.parametrize(("output_stride", "rates"), [(16, [6, 12, 18]), (8, [12, 24, 36]), (32, [3, 6, 9])])
def test_aspp_rates_follow_output_stride(output_stride, rates):
    model = build_model("deeplabv3plus_xception41", num_classes=2, output_stride=output_stride)
    assert _dilations(model.head.aspp) == rates


def test_explicit_atrous_rates_override_the_default():
    model = build_model("deeplabv3plus_xception41", num_classes=4, output_stride=8, atrous_rates=(2, 4, 8))
    assert _dilations(model.head.aspp) == [2, 4, 8]


def test_xception_dilates_instead_of_striding_beyond_output_stride():
    model = build_model("deeplabv3plus_xception65", num_classes=2, output_stride=8)
    strides = [b.stack.conv3.conv_dw.stride[0] for b in model.backbone.blocks]
    dilations = [b.stack.conv3.conv_dw.dilation[0] for b in model.backbone.blocks]
    assert strides[:2] == [2, 2] and all(s == 1 for s in strides[2:])
    assert dilations[:3] == [1, 1, 1] and dilations[3:-1] == [2] * 17 and dilations[-1] == 4


def test_xception_at_output_stride_32_strides_and_never_dilates():
    # FC-DRN's finding for training from scratch: strided downsampling rather than dilation.
    model = build_model("deeplabv3plus_xception41", num_classes=2, output_stride=32)
    strides = [b.stack.conv3.conv_dw.stride[0] for b in model.backbone.blocks]
    dilations = [b.stack.conv3.conv_dw.dilation[0] for b in model.backbone.blocks]
    assert strides[:3] == [2, 2, 2] and strides[-2] == 2 and set(dilations) == {1}
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 2, 64, 96)


def test_middle_flow_depth():
    x41 = build_model("deeplabv3plus_xception41", num_classes=2)
    x65 = build_model("deeplabv3plus_xception65", num_classes=2)
    assert len(x41.backbone.blocks) == 3 + 8 + 2
    assert len(x65.backbone.blocks) == 3 + 16 + 2


def test_every_separable_conv_has_norm_and_relu_after_depthwise_and_pointwise():
    model = build_model("deeplabv3plus_xception41", num_classes=2)
    separable = [m for m in model.backbone.modules() if hasattr(m, "conv_dw")]
    assert len(separable) == 13 * 3
    for m in separable:
        assert isinstance(m.bn_dw, nn.BatchNorm2d) and isinstance(m.act_dw, nn.ReLU)
        assert isinstance(m.bn_pw, nn.BatchNorm2d) and isinstance(m.act_pw, nn.ReLU)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.backbone.modules())


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("deeplabv3plus_xception65", 41.0e6, 41.3e6),
        ("deeplabv3plus_xception41", 27.5e6, 28.5e6),
        ("deeplabv3plus_resnet50", 26.0e6, 27.5e6),
        ("fcn_vgg16", 26.0e6, 27.0e6),
    ],
)
def test_parameter_counts_match_the_architectures(name, low, high):
    assert low <= count_parameters(build_model(name, num_classes=21)) <= high


def test_vgg16_backbone_has_torchvision_parameter_count():
    # torchvision's vgg16().features holds 14,714,688 parameters.
    assert count_parameters(build_model("fcn_vgg16", num_classes=3).backbone) == 14_714_688


def test_resnet50_backbone_has_torchvision_parameter_count():
    # torchvision's resnet50() holds 25,557,032 parameters, of which fc is 2048 * 1000 + 1000.
    backbone = build_model("deeplabv3plus_resnet50", num_classes=3).backbone
    assert count_parameters(backbone) == 25_557_032 - 2_049_000


def test_freeze_backbone_stops_gradients_and_keeps_norm_layers_in_eval():
    model = build_model("deeplabv3plus_resnet50", num_classes=2, freeze_backbone=True)
    model.train()
    assert not model.backbone.training and model.head.training
    bn = model.backbone.bn1
    mean_before = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert torch.equal(bn.running_mean, mean_before)


def test_fcn_freeze_backbone():
    model = build_model("fcn_vgg16", num_classes=3, freeze_backbone=True)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head"}


def test_unknown_model_and_option_errors_name_the_valid_choices():
    with pytest.raises(ConfigError, match="available: deeplabv3plus_resnet50"):
        build_model("unet", num_classes=2)
    with pytest.raises(ConfigError, match="valid options: atrous_rates, freeze_backbone, norm_eps, output_stride"):
        build_model("deeplabv3plus_xception41", num_classes=2, stride=8)
    with pytest.raises(ConfigError, match="output_stride must be 8, 16 or 32"):
        build_model("deeplabv3plus_xception41", num_classes=2, output_stride=4)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("fcn_vgg16", num_classes=0)
    with pytest.raises(ConfigError, match="norm_eps must be a positive number"):
        build_model("deeplabv3plus_xception41", num_classes=2, norm_eps=0)


@pytest.mark.parametrize(("name", "default"), [("deeplabv3plus_xception41", 1e-3), ("deeplabv3plus_xception65", 1e-3),
                                               ("deeplabv3plus_resnet50", 1e-5)])
@pytest.mark.parametrize("norm_eps", [None, 1e-3, 1e-5])
def test_norm_eps_reaches_every_backbone_batch_norm(name, default, norm_eps):
    # Xception's default is the TensorFlow original's 1e-3 (timm's ports of its weights need it), ResNet's torch's.
    assert model_options(name)["norm_eps"] == default
    options = {} if norm_eps is None else {"norm_eps": norm_eps}
    model = build_model(name, num_classes=2, **options)
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and {m.eps for m in norms} == {default if norm_eps is None else norm_eps}
    assert all(m.eps == 1e-5 for m in model.head.modules() if isinstance(m, nn.BatchNorm2d))  # heads: not pretrained


def test_seglab_models_prints_a_table(capsys):
    from seglab.cli import main

    assert main(["models", "--size", "64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[0] == "model"
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(list_models())
    assert 41.0 <= float(rows["deeplabv3plus_xception65"][1]) <= 41.3
    assert all(float(row[2]) > 0 for row in rows.values())


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(("size", "stride", "dilation"), [((16, 24), 1, 2), ((18, 18), 1, 3), ((16, 16), 2, 1),
                                                          ((8, 8), 1, 8), ((6, 8), 1, 12), ((10, 10), 1, 4),
                                                          ((9, 12), 1, 2), ((14, 14), 1, 6), ((15, 20), 1, 6),
                                                          ((4, 5), 1, 2)])
def test_depthwise_conv_fast_routes_equal_the_plain_convolution(size, stride, dilation, channels_last):
    # Sub-grids (padded below and right where the map is no multiple of the dilation: (10, 10) at 4, (9, 12) at
    # 2, ASPP's rate 6 on 14x14 and 15x20 maps), float32 for a stride, a per-channel scale for dilations past the
    # map; (4, 5) at dilation 2 leaves sub-grids smaller than the kernel and takes the plain route. Each keeps
    # the input's memory format, so a channels-last network stays channels-last.
    from seglab.models.layers import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(5, stride=stride, dilation=dilation)
    plain = nn.Conv2d(5, 5, 3, stride, dilation, dilation, groups=5, bias=False)
    plain.weight = conv.weight
    x = torch.randn(2, 5, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    fast, reference = conv(x), plain(x)
    assert fast.shape == reference.shape
    if channels_last:
        assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    fast_grads = torch.autograd.grad(fast.square().sum(), (x, conv.weight))
    reference_grads = torch.autograd.grad(reference.square().sum(), (x, conv.weight))
    for got, expected in zip(fast_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, reference = conv(x), plain(x)
    assert fast.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), reference.float(), rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("name", ["deeplabv3plus_xception41", "deeplabv3plus_resnet50"])
def test_zero_init_residual_starts_every_residual_block_as_its_shortcut(name):
    from seglab.models.resnet import Bottleneck
    from seglab.models.xception import XceptionBlock

    def residual_blocks(model):
        return [m for m in model.backbone.modules()
                if isinstance(m, Bottleneck) or (isinstance(m, XceptionBlock) and m.residual)]

    def last_norm(block):
        return block.bn3 if isinstance(block, Bottleneck) else block.stack.conv3.bn_pw

    torch.manual_seed(0)
    model = build_model(name, num_classes=3, zero_init_residual=True).train()
    blocks = residual_blocks(model)
    assert blocks and all(torch.count_nonzero(last_norm(b).weight) == 0 for b in blocks)
    assert all(torch.count_nonzero(last_norm(b).weight) > 0 for b in residual_blocks(build_model(name, num_classes=3)))
    identity_block = next(b for b in blocks if (b.downsample if isinstance(b, Bottleneck) else b.shortcut) is None)
    channels = identity_block.conv1.in_channels if isinstance(identity_block, Bottleneck) else 728
    x = torch.randn(2, channels, 8, 8)
    with torch.no_grad():
        out = identity_block(x)
    if isinstance(identity_block, Bottleneck):
        torch.testing.assert_close(out, torch.relu(x))  # torchvision's bottleneck: relu(branch + x)
    else:
        torch.testing.assert_close(out[0], x)


def test_a_saved_spec_with_the_old_option_name_builds_the_same_network():
    # InferenceSpec.model_options of checkpoints written before the rename say `preactivation`.
    from seglab.inference.loading import build_trained_model
    from seglab.inference.spec import InferenceSpec

    torch.manual_seed(0)
    reference = build_model("deeplabv3plus_xception41", num_classes=2, start_with_relu=True).eval()
    spec = InferenceSpec(model="deeplabv3plus_xception41", model_options={"preactivation": True}, num_classes=2,
                         class_names=("a", "b"), palette=((0, 0, 0), (255, 0, 0)))
    with pytest.deprecated_call(match="preactivation is now called start_with_relu"):
        model = build_trained_model(InferenceSpec.from_dict(spec.to_dict()), reference.state_dict())
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images), reference(images))
    assert [block.relu_before_convs for block in model.backbone.blocks] == [True] * 12 + [False]


def test_xception_blocks_are_a_module_list_under_timm_s_keys():
    backbone = build_model("deeplabv3plus_xception41", num_classes=2).backbone
    assert isinstance(backbone.blocks, nn.ModuleList)
    assert "blocks.12.stack.conv3.conv_pw.weight" in backbone.state_dict()
