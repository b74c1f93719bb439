"""Inference's fast paths (BatchNorm folding, memory format, torch.compile): the same predictions, faster."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from seglab.data.classes import default_palette
from seglab.errors import ConfigError
from seglab.inference.device import batch_norm_folding_is_faster, channels_last_is_faster, resolve_channels_last
from seglab.inference.fold import fold_batch_norms
from seglab.inference.predictor import Predictor, inference_model
from seglab.inference.spec import InferenceSpec
from seglab.models import build_model, list_models


def randomise_norm_statistics(model: nn.Module) -> nn.Module:
    # Fresh BatchNorms are identities (mean 0, var 1, weight 1, bias 0); folding them would test nothing.
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.2)
    return model


@pytest.mark.parametrize("name", list_models())
@torch.no_grad()
def test_folding_keeps_every_model_s_output_and_removes_its_batch_norms(name):
    torch.manual_seed(0)
    model = randomise_norm_statistics(build_model(name, num_classes=3)).eval()
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batch_norms(copy.deepcopy(model))
    images = torch.rand(2, 3, 48, 64)
    expected = model(images)
    assert torch.allclose(folded(images), expected, atol=1e-4 * expected.abs().max().item())
    left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    # Every BatchNorm of the Xception and ResNet models follows a convolution; VGG has none.
    assert left == 0, f"{name}: {left} of {norms} BatchNorms were not folded"


@torch.no_grad()
def test_folding_covers_the_dilated_and_degenerate_depthwise_routes():
    # Output stride 8 at 64 px puts ASPP's large rates past the map (the per-channel-scale route) and the exit
    # flow on the sub-grid route; both must carry the bias that folding adds.
    torch.manual_seed(0)
    model = randomise_norm_statistics(build_model("deeplabv3plus_xception41", num_classes=3, output_stride=8)).eval()
    folded = fold_batch_norms(copy.deepcopy(model))
    images = torch.rand(1, 3, 64, 64)
    expected = model(images)
    assert torch.allclose(folded(images), expected, atol=1e-4 * expected.abs().max().item())


def test_folding_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(build_model("deeplabv3plus_xception41", num_classes=3))


def test_inference_model_leaves_the_trained_model_untouched_and_uses_the_memory_format():
    model = build_model("deeplabv3plus_xception41", num_classes=3).train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    prepared = inference_model(model, channels_last=True, device=torch.device("cpu"))
    assert model.training and not prepared.training
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    convolution = next(m for m in prepared.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_auto_follows_device_and_precision():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_channels_last("auto", gpu, "fp16") is True
    assert resolve_channels_last("auto", cpu, "bf16") is True
    assert resolve_channels_last("auto", cpu, "fp32") is False
    assert resolve_channels_last(False, cpu, "bf16") is False
    assert channels_last_is_faster(cpu, "fp32") is False
    with pytest.raises(Exception, match="true, false or auto"):
        resolve_channels_last("yes", cpu, "fp32")


@pytest.mark.slow  # torch.compile builds kernels for ~20 s
def test_a_compiled_predictor_predicts_as_the_eager_one():
    torch.manual_seed(0)
    model = randomise_norm_statistics(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                                    nn.ReLU(), nn.Conv2d(8, 3, 1)))
    spec = InferenceSpec(model="tiny", model_options={}, num_classes=3, class_names=("a", "b", "c"),
                         palette=default_palette(3))
    images = torch.rand(2, 3, 24, 40)
    eager = Predictor(model, spec, precision="fp32")
    compiled = Predictor(model, spec, precision="fp32", compile=True)
    assert "compiled" in repr(compiled) and "compiled" not in repr(eager)
    expected = eager.predict_proba(images)
    for got, want in zip(compiled.predict_proba(images), expected, strict=True):
        assert np.abs(got - want).max() < 1e-4
    assert len({int(c) for c in np.unique(np.stack(eager.predict(images)))}) > 1  # not a flat map


def test_compile_is_refused_for_an_onnx_file(tmp_path):
    import seglab

    with pytest.raises(ConfigError, match="pytorch engine"):
        seglab.load(tmp_path / "model.onnx", compile=True)


def test_batch_norm_is_folded_only_where_it_was_measured_faster():
    model = build_model("deeplabv3plus_xception41", num_classes=3)
    on_gpu = inference_model(model, channels_last=True, device=torch.device("cuda"))  # the rule, not a GPU run
    assert any(isinstance(m, nn.BatchNorm2d) for m in on_gpu.modules())
    assert batch_norm_folding_is_faster(torch.device("cpu")) and not batch_norm_folding_is_faster(torch.device("cuda"))
