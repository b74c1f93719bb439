"""Segmentation losses on logits (N, C, H, W) and label maps (N, H, W), all honouring `ignore_index`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.data.classes import class_pixel_counts
from seglab.errors import ConfigError

LOSSES = ("ce", "dice", "focal", "ce_dice", "ohem_ce", "lovasz", "ce_lovasz")


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


class PixelLoss(nn.Module):
    """A loss over labelled pixels: what every seglab loss keeps, `ignore_index` and optional per-class weights
    (a non-persistent buffer, so checkpoints do not carry it and it follows the module's device)."""

    class_weights: torch.Tensor | None  # the buffer registered below: declared, since Module types attributes loosely

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)


class DiceLoss(PixelLoss):
    """Soft multi-class Dice loss, 1 - mean over classes of 2|P∩T| / (|P| + |T|), ignored pixels masked out.

    Classes absent from both the batch's truth and prediction would give 0/0; `smooth` makes them count as
    a perfect score instead of a NaN.
    """

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 smooth: float = 1.0) -> None:
        super().__init__(ignore_index=ignore_index, class_weights=class_weights)
        self.smooth = smooth

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


class FocalLoss(PixelLoss):
    """Focal loss (Lin et al., https://arxiv.org/abs/1708.02002): cross-entropy scaled by (1 - p_t)^gamma."""

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 gamma: float = 2.0) -> None:
        super().__init__(ignore_index=ignore_index, class_weights=class_weights)
        self.gamma = gamma

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


def zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A finite zero connected to `logits`: the loss of a batch whose pixels are all ignored (a mean over no
    pixels would be NaN, and the backward pass needs a graph)."""
    return logits.float().sum() * 0.0


class TopKCrossEntropyLoss(PixelLoss):
    """Online hard-pixel mining: cross-entropy averaged over the `top_fraction` of labelled pixels with the
    largest loss in the batch (DeepLab's `top_k_percent_pixels` in Detectron2's DeepLab, mmseg's OHEM sampler
    by count). Easy pixels (most of a sky or a wall) stop drowning the hard ones: thin classes and borders."""

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 top_fraction: float = 0.2) -> None:
        if not 0 < top_fraction <= 1:
            raise ConfigError(f"ohem_top_fraction must be in (0, 1], got {top_fraction!r}")
        super().__init__(ignore_index=ignore_index, class_weights=class_weights)
        self.top_fraction = top_fraction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixel_losses = F.cross_entropy(logits.float(), target, weight=self.class_weights,
                                       ignore_index=self.ignore_index, reduction="none")
        valid = pixel_losses[target != self.ignore_index]
        if valid.numel() == 0:
            return zero_loss(logits)
        # Counted over labelled pixels only, so void borders do not shrink the share of real pixels kept.
        count = max(1, math.ceil(self.top_fraction * valid.numel()))
        return valid.topk(count, sorted=False).values.mean()


def lovasz_grad(truth_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted in decreasing order (Berman et al.
    2018, Algorithm 1): g_i = Delta(first i pixels) - Delta(first i-1), Delta(S) = |S| / |truth u S| in its
    intersection-over-union form; `truth_sorted` is the 0/1 foreground of the pixels in that order, (P,) or
    (P, classes) with each column sorted by its own class's errors."""
    total = truth_sorted.sum(0)
    intersection = total - truth_sorted.cumsum(0)
    union = total + (1 - truth_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


class LovaszSoftmaxLoss(PixelLoss):
    """Lovasz-softmax (Berman, Rannen Triki, Blaschko, CVPR 2018, https://arxiv.org/abs/1705.08790): a convex
    surrogate of 1 - IoU of each class, from the softmax probabilities, averaged over the classes present in the
    truth (the reference implementation's `classes="present"`). `per_image=False` flattens the whole batch into
    one set of pixels (the reference's default: the batch IoU); `per_image=True` averages the images' losses.
    `class_weights` weight the classes' losses in the average."""

    def __init__(self, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 per_image: bool = False) -> None:
        super().__init__(ignore_index=ignore_index, class_weights=class_weights)
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = logits.float().softmax(dim=1)
        groups = zip(probabilities, target, strict=True) if self.per_image else [(probabilities, target)]
        losses = [loss for probs, truth in groups if (loss := self.flat_loss(probs, truth)) is not None]
        return torch.stack(losses).mean() if losses else zero_loss(logits)

    def flat_loss(self, probabilities: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """The loss of one set of pixels ((N,) C, H, W probabilities): None when none is labelled."""
        num_classes = probabilities.shape[-3]
        probs = probabilities.movedim(-3, -1).reshape(-1, num_classes)
        labels = target.reshape(-1)
        valid = labels != self.ignore_index
        probs, labels = probs[valid], labels[valid]
        present = labels.unique()
        if present.numel() == 0:
            return None
        # All present classes at once: one sort of (pixels, classes) errors along the pixels.
        foreground = F.one_hot(labels, num_classes)[:, present].float()
        errors = (foreground - probs[:, present]).abs()
        errors_sorted, order = errors.sort(dim=0, descending=True)
        losses = (errors_sorted * lovasz_grad(foreground.gather(0, order))).sum(0)
        if self.class_weights is None:
            return losses.mean()
        weights = self.class_weights[present]
        return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


class SumOfLosses(nn.Module):
    """Several losses added, each weighted 1."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses: list[torch.Tensor] = [loss(logits, target) for loss in self.losses]
        return sum(losses[1:], losses[0])


def build_loss(name: str, *, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
               focal_gamma: float = 2.0, ohem_top_fraction: float = 0.2, lovasz_per_image: bool = False
               ) -> nn.Module:
    """The loss called `name` (one of `LOSSES`)."""
    if name == "ce":
        return CrossEntropyLoss(ignore_index=ignore_index, class_weights=class_weights)
    if name == "dice":
        return DiceLoss(ignore_index=ignore_index, class_weights=class_weights)
    if name == "focal":
        return FocalLoss(ignore_index=ignore_index, class_weights=class_weights, gamma=focal_gamma)
    if name == "ce_dice":
        return CrossEntropyDiceLoss(ignore_index=ignore_index, class_weights=class_weights)
    if name == "ohem_ce":
        return TopKCrossEntropyLoss(ignore_index=ignore_index, class_weights=class_weights,
                                    top_fraction=ohem_top_fraction)
    lovasz = LovaszSoftmaxLoss(ignore_index=ignore_index, class_weights=class_weights, per_image=lovasz_per_image)
    if name == "lovasz":
        return lovasz
    if name == "ce_lovasz":
        return SumOfLosses(CrossEntropyLoss(ignore_index=ignore_index, class_weights=class_weights), lovasz)
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
