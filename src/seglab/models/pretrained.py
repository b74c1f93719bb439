"""Loading ImageNet backbone weights in public state-dict layouts: torchvision (VGG16, ResNet-50), timm (Xception).

Each backbone's registry entry (`seglab.models.backbone.BackboneEntry`, declared in the backbone's own file)
carries its `BackboneWeights`: where the file is, its layout and how it maps onto seglab's modules, the input
normalisation it was trained with and the layer settings the model must be built with. Our backbones keep those
libraries' module names, so the mapping is: unwrap the container, drop the classifier and the `module.` prefix of
DataParallel saves, then check every key and shape before loading anything. Files are read with
`torch.load(weights_only=True)`: a weights file can never run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from seglab.errors import SeglabError, WeightsError
from seglab.models.backbone import Backbone, BackboneWeights
from seglab.torch_floor import refuse_unsafe_torch

__all__ = ["BackboneWeights", "cache_dir", "load_backbone_weights", "read_state_dict",
           "resolve_weights"]



def cache_dir() -> Path:
    """Where downloaded weights live: $SEGLAB_CACHE/weights, else ~/.cache/seglab/weights."""
    root = os.environ.get("SEGLAB_CACHE") or Path.home() / ".cache" / "seglab"
    return Path(root) / "weights"


def resolve_weights(source: str | Path, weights: BackboneWeights) -> Path:
    """A local path as it is; an http(s) URL downloaded into `cache_dir()`; "imagenet" the URL of `weights`."""
    text = str(source)
    if text == "imagenet":
        text = weights.url
    if urlparse(text).scheme in ("http", "https"):
        from seglab.download import download_to_cache

        try:
            return download_to_cache(text, cache_dir())
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
    refuse_unsafe_torch(path, "weights file")
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
