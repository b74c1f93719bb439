"""ImageNet backbone weights in the public state-dict layouts: torchvision (VGG16, ResNet-50), timm (Xception).

Our backbones keep those libraries' module names, so the mapping is: unwrap the container, drop the classifier
and the `module.` prefix of DataParallel saves, then check every key and shape before loading anything.
Files are read with `torch.load(weights_only=True)`: a weights file can never run code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch

from seglab.errors import SeglabError, WeightsError
from seglab.models.backbone import Backbone
from seglab.models.resnet import ResNet
from seglab.models.vgg import VGG16
from seglab.models.xception import AlignedXception

# Known ImageNet weights. torchvision's file names end in the first hex digits of the file's sha256.
IMAGENET_WEIGHTS: dict[str, str] = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "xception41": "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/tf_xception_41-e6439c97.pth",
    "xception65": "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/tf_xception_65-c9ae96e8.pth",
}

HASH_IN_FILENAME = re.compile(r"-([a-f0-9]{6,})\.[A-Za-z0-9]+$")


def cache_dir() -> Path:
    """Where downloaded weights live: $SEGLAB_CACHE/weights, else ~/.cache/seglab/weights."""
    root = os.environ.get("SEGLAB_CACHE") or Path.home() / ".cache" / "seglab"
    return Path(root) / "weights"


def _classifier_free(state: Mapping[str, torch.Tensor], classifier_prefixes: tuple[str, ...]) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(classifier_prefixes)}


def map_torchvision_vgg16(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision `vgg16()`: `features.N.*` are ours as they are; `classifier.*` is the ImageNet head."""
    return _classifier_free(state, ("classifier.",))


def map_torchvision_resnet(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision `resnet50()`: conv1/bn1/layer1-4 are ours as they are; `fc.*` is the ImageNet head."""
    return _classifier_free(state, ("fc.",))


def map_timm_xception(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `xception41`/`xception65`: stem/blocks are ours as they are; `head.*` (and old `fc.*`) is the head."""
    return _classifier_free(state, ("head.", "fc."))


MAPPINGS: dict[type[Backbone], tuple[str, Callable[[Mapping[str, torch.Tensor]], dict]]] = {
    VGG16: ("torchvision vgg16", map_torchvision_vgg16),
    ResNet: ("torchvision resnet50", map_torchvision_resnet),
    AlignedXception: ("timm xception41/65", map_timm_xception),
}


def _imagenet_url(backbone: Backbone) -> str:
    if isinstance(backbone, VGG16):
        return IMAGENET_WEIGHTS["vgg16"]
    if isinstance(backbone, ResNet):
        return IMAGENET_WEIGHTS["resnet50"]
    middle = len(backbone.blocks) - 5
    return IMAGENET_WEIGHTS[{8: "xception41", 16: "xception65"}[middle]]


def resolve_weights(source: str | Path, backbone: Backbone) -> Path:
    """A local path as it is; an http(s) URL downloaded into `cache_dir()`; "imagenet" the known URL."""
    text = str(source)
    if text == "imagenet":
        text = _imagenet_url(backbone)
    if urlparse(text).scheme in ("http", "https"):
        from seglab.download import download_file

        name = Path(urlparse(text).path).name or "weights.pth"
        match = HASH_IN_FILENAME.search(name)
        try:
            return download_file(text, cache_dir() / name, sha256_prefix=match.group(1) if match else None)
        except SeglabError as error:
            raise WeightsError(f"cannot fetch pretrained weights: {error}") from None
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"pretrained weights {path} not found; give a file path, an http(s) URL or 'imagenet' "
            f"(known URLs: {', '.join(IMAGENET_WEIGHTS.values())})"
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state dict safely, unwrapping {'state_dict': ...}/{'model': ...} and `module.` prefixes."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for corrupt or unsafe files
        raise WeightsError(
            f"cannot read weights file {path}: {type(error).__name__}: {str(error).splitlines()[0]}. "
            "It must be a PyTorch state dict saved with torch.save (pickled code is refused)."
        ) from None
    for container_key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(container_key), dict):
            loaded = loaded[container_key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _listing(title: str, names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return f"{title} ({len(names)}): {shown}{more}"


def load_backbone_weights(backbone: Backbone, source: str | Path) -> None:
    """Loads ImageNet weights into `backbone`, refusing any missing, unexpected or mis-shaped key."""
    layout = next(((name, fn) for cls, (name, fn) in MAPPINGS.items() if isinstance(backbone, cls)), None)
    if layout is None:
        raise WeightsError(f"no pretrained-weight mapping for {type(backbone).__name__}")
    layout_name, mapping = layout
    path = resolve_weights(source, backbone)
    mapped = mapping(read_state_dict(path))
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(mapped[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(expected) & set(mapped)
        if mapped[k].shape != expected[k].shape
    )
    problems = [
        _listing(title, names)
        for title, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if names
    ]
    if problems:
        raise WeightsError(
            f"{path} does not fit the {type(backbone).__name__} backbone (expected the {layout_name} layout): "
            + "; ".join(problems)
        )
    backbone.load_state_dict(mapped, strict=True)
