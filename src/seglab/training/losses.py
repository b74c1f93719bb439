"""Segmentation losses on logits (N, C, H, W) and label maps (N, H, W), all honouring `ignore_index`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.data.classes import class_pixel_counts
from seglab.errors import ConfigError

LOSSES = ("ce", "dice", "focal", "ce_dice")


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Pixel-wise (sparse) cross-entropy; `class_weights` rescale each class's pixels."""

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None) -> None:
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        super().__init__(weight=weight, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Under autocast the logits may be bf16/fp16; the loss is computed in fp32 for a stable log-softmax.
        # The weighted mean is summed and divided here rather than by reduction="mean", which gives 0/0 = NaN
        # (and NaN gradients) for a batch whose every pixel is ignored; here that batch's loss is 0.
        per_pixel = F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index,
                                    reduction="none")
        valid = target != self.ignore_index
        weights = valid.float() if self.weight is None else self.weight[torch.where(valid, target, 0)] * valid
        return per_pixel.sum() / weights.sum().clamp(min=torch.finfo(torch.float32).tiny)


class DiceLoss(nn.Module):
    """Soft multi-class Dice loss, 1 - mean over classes of 2|P∩T| / (|P| + |T|), ignored pixels masked out.

    Classes absent from both the batch's truth and prediction would give 0/0; `smooth` makes them count as
    a perfect score instead of a NaN.
    """

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        valid = target != self.ignore_index
        probabilities = logits.float().softmax(dim=1) * valid.unsqueeze(1)
        one_hot = F.one_hot(torch.where(valid, target, 0), num_classes).permute(0, 3, 1, 2).float()
        one_hot = one_hot * valid.unsqueeze(1)
        dims = (0, 2, 3)
        intersection = (probabilities * one_hot).sum(dims)
        cardinality = probabilities.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth)
        if self.class_weights is None:
            return 1 - dice.mean()
        return 1 - (dice * self.class_weights).sum() / self.class_weights.sum()


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., https://arxiv.org/abs/1708.02002): cross-entropy scaled by (1 - p_t)^gamma."""

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 gamma: float = 2.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = gamma
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        safe_target = torch.where(valid, target, 0)
        log_p = logits.float().log_softmax(dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        weight = valid.float()
        if self.class_weights is not None:
            weight = weight * self.class_weights[safe_target]
        return (loss * weight).sum() / weight.sum().clamp(min=1e-12)


class CrossEntropyDiceLoss(nn.Module):
    """Cross-entropy plus Dice, each weighted 1: CE drives early learning, Dice balances small classes."""

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.cross_entropy = CrossEntropyLoss(ignore_index=ignore_index, class_weights=class_weights)
        self.dice = DiceLoss(ignore_index=ignore_index, class_weights=class_weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(logits, target) + self.dice(logits, target)


def build_loss(name: str, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
               focal_gamma: float = 2.0) -> nn.Module:
    """The loss called `name` (one of `LOSSES`)."""
    if name == "ce":
        return CrossEntropyLoss(ignore_index=ignore_index, class_weights=class_weights)
    if name == "dice":
        return DiceLoss(ignore_index=ignore_index, class_weights=class_weights)
    if name == "focal":
        return FocalLoss(ignore_index=ignore_index, class_weights=class_weights, gamma=focal_gamma)
    if name == "ce_dice":
        return CrossEntropyDiceLoss(ignore_index=ignore_index, class_weights=class_weights)
    raise ConfigError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")


def class_weights_from_frequencies(masks: Iterable[torch.Tensor], num_classes: int, *,
                                   ignore_index: int = 255) -> list[float]:
    """Median-frequency class weights (Eigen & Fergus): median(freq) / freq(c), from label maps.

    A class that never occurs gets weight 0 instead of an infinite one.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for mask in masks:
        counts += torch.from_numpy(class_pixel_counts(mask, num_classes, ignore_index)).double()
    frequencies = counts / counts.sum().clamp(min=1)
    present = frequencies > 0
    if not bool(present.any()):
        raise ConfigError("cannot compute class weights: no labelled pixels in the training masks")
    median = frequencies[present].quantile(0.5)  # averages the middle two, unlike Tensor.median
    weights = torch.where(present, median / frequencies.clamp(min=1e-12), torch.zeros_like(frequencies))
    return [round(float(w), 6) for w in weights]
