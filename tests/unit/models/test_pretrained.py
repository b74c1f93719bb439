"""Pretrained-backbone loading: state dicts built here in torchvision's and timm's exact key layouts.

The layouts below are written out from those libraries' architectures independently of seglab's modules,
so a renamed or re-shaped seglab layer makes these tests fail.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest
import torch
import torch.nn.functional as F

from seglab.download import cache_path
from seglab.errors import ConfigError, WeightsError
from seglab.models import build_model
from seglab.models.pretrained import read_state_dict
from seglab.models.vgg import map_torchvision_vgg16

VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
VGG16_CONVS += [(256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
VGG16_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's ImageNet weights
SYMMETRIC_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # timm's IMAGENET_INCEPTION_MEAN/STD: inputs in [-1, 1]


def _bn(prefix: str, channels: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.rand(channels) + 0.5,
        f"{prefix}.bias": torch.randn(channels) * 0.1,
        f"{prefix}.running_mean": torch.randn(channels) * 0.1,
        f"{prefix}.running_var": torch.rand(channels) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(1000),
    }


def torchvision_vgg16_state(classifier: bool = True) -> dict[str, torch.Tensor]:
    state = {}
    for index, (c_in, c_out) in zip(VGG16_CONV_INDICES, VGG16_CONVS, strict=True):
        state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3) * (2 / (9 * c_in)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(c_out) * 0.01
    if classifier:  # torch.empty: the shapes are the real ones, the memory is never touched
        for index, (c_in, c_out) in {0: (25088, 4096), 3: (4096, 4096), 6: (4096, 1000)}.items():
            state[f"classifier.{index}.weight"] = torch.empty(c_out, c_in)
            state[f"classifier.{index}.bias"] = torch.empty(c_out)
    return state


def torchvision_resnet50_state() -> dict[str, torch.Tensor]:
    state = {"conv1.weight": torch.randn(64, 3, 7, 7), **_bn("bn1", 64)}
    in_channels = 64
    for layer, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), start=1):
        for block in range(blocks):
            p = f"layer{layer}.{block}"
            state[f"{p}.conv1.weight"] = torch.randn(width, in_channels, 1, 1)
            state.update(_bn(f"{p}.bn1", width))
            state[f"{p}.conv2.weight"] = torch.randn(width, width, 3, 3)
            state.update(_bn(f"{p}.bn2", width))
            state[f"{p}.conv3.weight"] = torch.randn(width * 4, width, 1, 1)
            state.update(_bn(f"{p}.bn3", width * 4))
            if block == 0:
                state[f"{p}.downsample.0.weight"] = torch.randn(width * 4, in_channels, 1, 1)
                state.update(_bn(f"{p}.downsample.1", width * 4))
            in_channels = width * 4
    state["fc.weight"] = torch.randn(1000, 2048)
    state["fc.bias"] = torch.randn(1000)
    return state


def timm_xception_state(middle_blocks: int) -> dict[str, torch.Tensor]:
    state = {"stem.0.conv.weight": torch.randn(32, 3, 3, 3), **_bn("stem.0.bn", 32)}
    state.update({"stem.1.conv.weight": torch.randn(64, 32, 3, 3), **_bn("stem.1.bn", 64)})
    blocks = [(64, (128,) * 3, True), (128, (256,) * 3, True), (256, (728,) * 3, True)]
    blocks += [(728, (728,) * 3, False)] * middle_blocks
    blocks += [(728, (728, 1024, 1024), True), (1024, (1536, 1536, 2048), False)]
    for i, (c_in, outs, shortcut) in enumerate(blocks):
        if shortcut:
            state[f"blocks.{i}.shortcut.conv.weight"] = torch.randn(outs[-1], c_in, 1, 1)
            state.update(_bn(f"blocks.{i}.shortcut.bn", outs[-1]))
        for k, c_out in enumerate(outs, start=1):
            p = f"blocks.{i}.stack.conv{k}"
            state[f"{p}.conv_dw.weight"] = torch.randn(c_in, 1, 3, 3)
            state.update(_bn(f"{p}.bn_dw", c_in))
            state[f"{p}.conv_pw.weight"] = torch.randn(c_out, c_in, 1, 1)
            state.update(_bn(f"{p}.bn_pw", c_out))
            c_in = c_out
    state["head.fc.weight"] = torch.randn(1000, 2048)
    state["head.fc.bias"] = torch.randn(1000)
    return state


@pytest.mark.parametrize(
    ("model_name", "make_state", "probe"),
    [
        ("deeplabv3plus_resnet50", torchvision_resnet50_state, "layer3.5.bn2.running_var"),
        ("deeplabv3plus_xception41", functools.partial(timm_xception_state, 8), "blocks.10.stack.conv2.conv_pw.weight"),
        ("deeplabv3plus_xception65", functools.partial(timm_xception_state, 16), "blocks.19.shortcut.conv.weight"),
        ("fcn_vgg16", torchvision_vgg16_state, "features.28.weight"),
    ],
)
def test_public_layout_loads_into_backbone(tmp_path, model_name, make_state, probe):
    state = make_state()
    if "classifier.0.weight" in state:  # don't write 400 MB of unused classifier to disk
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    model = build_model(model_name, num_classes=3, pretrained_backbone=path)
    assert torch.equal(model.backbone.state_dict()[probe], state[probe])
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)


def test_full_torchvision_vgg16_dict_with_classifier_maps_to_backbone():
    mapped = map_torchvision_vgg16(torchvision_vgg16_state(classifier=True))
    backbone = build_model("fcn_vgg16", num_classes=3).backbone
    assert set(mapped) == set(backbone.state_dict())
    assert all(mapped[k].shape == v.shape for k, v in backbone.state_dict().items())


def test_loaded_vgg16_computes_the_reference_block3_feature(tmp_path):
    state = torchvision_vgg16_state(classifier=False)
    torch.save(state, tmp_path / "vgg16.pth")
    backbone = build_model("fcn_vgg16", num_classes=3, pretrained_backbone=tmp_path / "vgg16.pth").backbone.eval()
    x = torch.randn(1, 3, 32, 32)
    # VGG16 up to block3_conv3 written with torch.nn.functional from the raw state dict.
    ref = x
    for index in VGG16_CONV_INDICES[:7]:
        ref = F.relu(F.conv2d(ref, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
        if index in (2, 7):
            ref = F.max_pool2d(ref, 2)
    with torch.no_grad():
        assert torch.allclose(backbone(x)["block3"], ref, atol=1e-5)


def test_wrong_layout_lists_missing_and_unexpected_keys(tmp_path):
    torch.save(torchvision_vgg16_state(classifier=False), tmp_path / "vgg.pth")
    with pytest.raises(WeightsError, match=r"missing \(\d+\): .*conv1.weight.*unexpected \(26\): features\."):
        build_model("deeplabv3plus_resnet50", num_classes=2, pretrained_backbone=tmp_path / "vgg.pth")


def test_shape_mismatch_is_reported_with_both_shapes(tmp_path):
    state = torchvision_vgg16_state(classifier=False)
    state["features.0.weight"] = torch.randn(64, 1, 3, 3)
    torch.save(state, tmp_path / "vgg.pth")
    expected = r"shape mismatch \(1\): features.0.weight \(64, 1, 3, 3\) vs \(64, 3, 3, 3\)"
    with pytest.raises(WeightsError, match=expected):
        build_model("fcn_vgg16", num_classes=2, pretrained_backbone=tmp_path / "vgg.pth")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path, capsys):
    torch.save({"weight": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="pickled code is refused"):
        read_state_dict(tmp_path / "evil.pth")
    assert "this must never run" not in capsys.readouterr().out


def test_container_and_dataparallel_prefix_are_unwrapped(tmp_path):
    state = {f"module.{k}": v for k, v in torchvision_vgg16_state(classifier=False).items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    assert set(read_state_dict(tmp_path / "ckpt.pth")) == {k.removeprefix("module.") for k in state}


def test_missing_file_names_the_alternatives(tmp_path):
    with pytest.raises(WeightsError, match=r"not found.*imagenet.*vgg16-397923af\.pth"):
        build_model("fcn_vgg16", num_classes=2, pretrained_backbone=tmp_path / "nope.pth")


@pytest.fixture
def weights_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_to_cache_with_hash_prefix_checked(weights_server, tmp_path, monkeypatch):
    served, base = weights_server
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEGLAB_ALLOW_HTTP", "1")  # the local test server speaks plain http
    payload = tmp_path / "payload.pth"
    torch.save(torchvision_vgg16_state(classifier=False), payload)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    name = f"vgg16-{digest[:8]}.pth"
    (served / name).write_bytes(payload.read_bytes())

    model = build_model("fcn_vgg16", num_classes=3, pretrained_backbone=f"{base}/{name}")
    assert cache_path(f"{base}/{name}", tmp_path / "cache" / "weights").is_file()
    assert torch.equal(model.backbone.features[0].weight, torch.load(payload, weights_only=True)["features.0.weight"])

    (served / f"vgg16-{'0' * 8}.pth").write_bytes(payload.read_bytes())
    with pytest.raises(WeightsError, match="cannot fetch pretrained weights"):
        build_model("fcn_vgg16", num_classes=3, pretrained_backbone=f"{base}/vgg16-{'0' * 8}.pth")
    assert not cache_path(f"{base}/vgg16-{'0' * 8}.pth", tmp_path / "cache" / "weights").exists()


def _timm_separable(x, state, prefix, *, stride=1, act=False):
    """timm's SeparableConv2d from the raw state dict: depthwise, BN, (ReLU), pointwise, BN, (ReLU)."""

    def bn(t, p):
        return F.batch_norm(
            t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"], state[f"{p}.bias"], eps=1e-3
        )

    x = F.conv2d(x, state[f"{prefix}.conv_dw.weight"], stride=stride, padding=1, groups=x.shape[1])
    x = bn(x, f"{prefix}.bn_dw")
    x = F.relu(x) if act else x
    x = bn(F.conv2d(x, state[f"{prefix}.conv_pw.weight"]), f"{prefix}.bn_pw")
    return F.relu(x) if act else x


def test_start_with_relu_xception_reproduces_timm_entry_flow_from_raw_weights(tmp_path):
    """The stem and the first two entry-flow blocks of timm's XceptionModule, written with torch.nn.functional."""
    state = timm_xception_state(8)
    torch.save(state, tmp_path / "x41.pth")
    model = build_model(
        "deeplabv3plus_xception41", num_classes=2, start_with_relu=True, pretrained_backbone=tmp_path / "x41.pth"
    ).eval()
    x = torch.randn(1, 3, 32, 32)

    def stem(t, i, stride):
        t = F.conv2d(t, state[f"stem.{i}.conv.weight"], stride=stride, padding=1)
        p = f"stem.{i}.bn"
        bn = F.batch_norm(
            t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"], state[f"{p}.bias"], eps=1e-3
        )
        return F.relu(bn)

    h = stem(stem(x, 0, 2), 1, 1)
    for block in (0, 1):
        p = f"blocks.{block}"
        skip = F.conv2d(h, state[f"{p}.shortcut.conv.weight"], stride=2)
        q = f"{p}.shortcut.bn"
        skip = F.batch_norm(
            skip,
            state[f"{q}.running_mean"],
            state[f"{q}.running_var"],
            state[f"{q}.weight"],
            state[f"{q}.bias"],
            eps=1e-3,
        )
        t = _timm_separable(F.relu(h), state, f"{p}.stack.conv1")
        tap = F.relu(_timm_separable(F.relu(t), state, f"{p}.stack.conv2"))  # timm's `stack.act3` feature
        h = _timm_separable(tap, state, f"{p}.stack.conv3", stride=2) + skip
    with torch.no_grad():
        features = model.backbone(x)
    assert torch.allclose(features["low_level"], tap, atol=1e-4, rtol=1e-4)


def test_default_arrangement_differs_from_the_pretrained_one():
    torch.manual_seed(0)
    paper = build_model("deeplabv3plus_xception41", num_classes=2).eval()
    preact = build_model("deeplabv3plus_xception41", num_classes=2, start_with_relu=True).eval()
    preact.load_state_dict(paper.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(paper(x), preact(x))


def test_each_model_maps_to_its_backbone_s_weights_entry():
    from seglab.models import list_models
    from seglab.models.registry import MODEL_BACKBONES, backbone_weights

    expected = {
        "fcn_vgg16": ("torchvision vgg16", "vgg16-397923af.pth", IMAGENET_STATS, {}),
        "deeplabv3plus_resnet50": ("torchvision resnet50", "resnet50-0676ba61.pth", IMAGENET_STATS, {}),
        "deeplabv3plus_xception41": ("timm xception41", "tf_xception_41-e6439c97.pth", SYMMETRIC_STATS,
                                     {"norm_eps": 1e-3}),
        "deeplabv3plus_xception65": ("timm xception65", "tf_xception_65-c9ae96e8.pth", SYMMETRIC_STATS,
                                     {"norm_eps": 1e-3}),
    }
    assert set(expected) == set(list_models())
    for name, (layout, file_name, stats, layer_options) in expected.items():
        weights = backbone_weights(name)
        assert (weights.layout, weights.url.rsplit("/", 1)[1]) == (layout, file_name)
        assert ((weights.mean, weights.std), dict(weights.layer_options)) == (stats, layer_options)
    assert {entry.name for entry in MODEL_BACKBONES.values() if entry.weights} == {"vgg16", "resnet50", "xception41",
                                                                                  "xception65"}
    with pytest.raises(TypeError):
        backbone_weights("deeplabv3plus_xception65").layer_options["norm_eps"] = 1e-5  # shared: read-only


def test_layer_settings_of_the_weights_are_the_factory_defaults():
    # A checkpoint is rebuilt without its pretrained_backbone (the weights are in it already), so the defaults
    # must already be what the weights need.
    from seglab.models import list_models, model_options
    from seglab.models.registry import backbone_weights

    for name in list_models():
        options = model_options(name)
        assert all(options[key] == value for key, value in backbone_weights(name).layer_options.items()), name


def test_fake_timm_weights_load_with_their_batch_norm_eps_and_a_conflicting_eps_is_refused(tmp_path):
    torch.save(timm_xception_state(8), tmp_path / "x41.pth")
    model = build_model("deeplabv3plus_xception41", num_classes=2, start_with_relu=True, norm_eps=1e-3,
                        pretrained_backbone=tmp_path / "x41.pth")
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 for m in norms)
    with pytest.raises(ConfigError, match=r"timm xception41 layout\) needs norm_eps=0.001, got norm_eps=1e-05"):
        build_model("deeplabv3plus_xception41", num_classes=2, norm_eps=1e-5, pretrained_backbone=tmp_path / "x41.pth")


def test_config_with_a_weights_file_builds_the_network_the_weights_need(tmp_path):
    # A file given as pretrained_backbone is taken to be in the family's layout, normalisation and layer settings.
    from seglab.training.config import load_config

    torch.save(timm_xception_state(8), tmp_path / "x41.pth")
    config = load_config(None, ["model=deeplabv3plus_xception41", "start_with_relu=true",
                                f"pretrained_backbone={tmp_path / 'x41.pth'}"])
    assert config.normalization() == SYMMETRIC_STATS and config.normalize == "symmetric"
    options = config.model_options()
    assert options["norm_eps"] == 1e-3
    model = build_model(config.model, num_classes=2, **options)
    assert all(m.eps == 1e-3 for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
