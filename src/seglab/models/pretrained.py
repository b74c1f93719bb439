"""ImageNet backbone weights in the public state-dict layouts: torchvision (VGG16, ResNet-50), timm (Xception).

Each known backbone's weights are one `BackboneWeights` entry: where the file is, its layout and how it maps onto
seglab's modules, the input normalisation it was trained with and the layer settings the model must be built with.
Our backbones keep those libraries' module names, so the mapping is: unwrap the container, drop the classifier
and the `module.` prefix of DataParallel saves, then check every key and shape before loading anything.
Files are read with `torch.load(weights_only=True)`: a weights file can never run code.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

import torch

from seglab.data.normalization import normalization_stats
from seglab.errors import ConfigError, SeglabError, WeightsError
from seglab.models.backbone import Backbone
from seglab.models.registry import MODEL_BACKBONES, list_models

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


@dataclasses.dataclass(frozen=True)
class BackboneWeights:
    """A backbone's ImageNet weights and everything that must match them.

    `url` is the file `"imagenet"` fetches; `layout` names its state-dict layout and `mapping` maps it onto the
    backbone's keys. `normalization` is the input normalisation the weights were trained with (a name from
    `seglab.data.normalization.NORMALIZATIONS`; `mean`/`std` give its statistics), `layer_options` the model
    options the network must be built with to compute the features the weights were trained to compute. The
    factories' defaults equal them, so a model rebuilt from a checkpoint without fetching the weights is the same
    network. A file or URL given instead of `"imagenet"` is assumed to share the layout, normalisation and layer
    settings.
    """

    url: str
    layout: str
    mapping: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]
    normalization: str
    layer_options: Mapping[str, object] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    @property
    def mean(self) -> tuple[float, float, float]:
        return normalization_stats(self.normalization)[0]

    @property
    def std(self) -> tuple[float, float, float]:
        return normalization_stats(self.normalization)[1]


_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights"
# timm builds its ports of DeepLab's TensorFlow checkpoints with BatchNorm eps 1e-3 and feeds them inputs in [-1, 1]
# (its IMAGENET_INCEPTION_MEAN/STD); torchvision's weights take ImageNet mean/std and torch's default eps.
_TIMM_XCEPTION_LAYERS = MappingProxyType({"norm_eps": 1e-3})

# Known ImageNet weights, by backbone. torchvision's file names end in the first hex digits of the file's sha256.
BACKBONE_WEIGHTS: Mapping[str, BackboneWeights] = MappingProxyType({
    "vgg16": BackboneWeights(
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        layout="torchvision vgg16", mapping=map_torchvision_vgg16, normalization="imagenet",
    ),
    "resnet50": BackboneWeights(
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        layout="torchvision resnet50", mapping=map_torchvision_resnet, normalization="imagenet",
    ),
    "xception41": BackboneWeights(
        url=f"{_TIMM_RELEASES}/tf_xception_41-e6439c97.pth",
        layout="timm xception41", mapping=map_timm_xception, normalization="symmetric",
        layer_options=_TIMM_XCEPTION_LAYERS,
    ),
    "xception65": BackboneWeights(
        url=f"{_TIMM_RELEASES}/tf_xception_65-c9ae96e8.pth",
        layout="timm xception65", mapping=map_timm_xception, normalization="symmetric",
        layer_options=_TIMM_XCEPTION_LAYERS,
    ),
})

# The URLs alone, by backbone name.
IMAGENET_WEIGHTS: dict[str, str] = {name: weights.url for name, weights in BACKBONE_WEIGHTS.items()}


def backbone_weights(model_name: str) -> BackboneWeights:
    """The `BackboneWeights` entry of the backbone a registered model is built on (`registry.MODEL_BACKBONES`)."""
    try:
        return BACKBONE_WEIGHTS[MODEL_BACKBONES[model_name]]
    except KeyError:
        raise ConfigError(f"no known backbone weights for model {model_name!r}; models with weights: "
                          f"{', '.join(name for name in list_models() if name in MODEL_BACKBONES)}") from None


def resolve_weights(source: str | Path, weights: BackboneWeights) -> Path:
    """A local path as it is; an http(s) URL downloaded into `cache_dir()`; "imagenet" the URL of `weights`."""
    text = str(source)
    if text == "imagenet":
        text = weights.url
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
            f"(this backbone's: {weights.url})"
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


def load_backbone_weights(backbone: Backbone, source: str | Path, weights: BackboneWeights) -> None:
    """Loads the weights at `source` ("imagenet", a file or a URL) in the layout of `weights` into `backbone`,
    refusing any missing, unexpected or mis-shaped key."""
    path = resolve_weights(source, weights)
    mapped = weights.mapping(read_state_dict(path))
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
            f"{path} does not fit the {type(backbone).__name__} backbone (expected the {weights.layout} layout): "
            + "; ".join(problems)
        )
    backbone.load_state_dict(mapped, strict=True)
