"""Input normalisation: the per-channel mean and std that images in [0, 1] are shifted and scaled by.

The statistics belong to the weights: each backbone's `BackboneWeights` names the normalisation its pretrained
weights were trained with, and a trained model's `InferenceSpec` carries the numbers. Data code receives plain
numbers, never a mode name.
"""

from __future__ import annotations

import torch

from seglab.errors import ConfigError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NORMALIZATIONS", "normalization_stats", "normalize"]

Stats = tuple[float, float, float]

IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("unit", "symmetric", "imagenet")

_STATS: dict[str, tuple[Stats, Stats]] = {
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1] as it is
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1], e.g. TensorFlow's Inception/Xception weights
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),  # torchvision's ImageNet weights
}


def normalization_stats(mode: str) -> tuple[Stats, Stats]:
    """(mean, std) of a named normalisation: `"unit"` 0/1, `"symmetric"` 0.5/0.5, `"imagenet"` ImageNet's."""
    try:
        return _STATS[mode]
    except KeyError:
        raise ConfigError(f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALIZATIONS)}") from None


def _per_channel(images: torch.Tensor, values: tuple[float, ...], name: str) -> torch.Tensor:
    if images.ndim not in (3, 4) or images.shape[-3] != len(values):
        raise ValueError(f"{name} has {len(values)} channels; images must be (C, H, W) or (N, C, H, W) with that "
                         f"many channels, got {tuple(images.shape)}")
    return torch.tensor(values, dtype=images.dtype, device=images.device).view(-1, 1, 1)


def _is_identity(mean: tuple[float, ...], std: tuple[float, ...]) -> bool:
    return all(m == 0 for m in mean) and all(s == 1 for s in std)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """`(images - mean) / std` per channel, for `(3, H, W)` or `(N, 3, H, W)` images in [0, 1] on any device.

    With mean 0 and std 1 the input itself is returned."""
    if _is_identity(mean, std):
        return images
    return (images - _per_channel(images, mean, "mean")) / _per_channel(images, std, "std")

