"""A backbone and a head assembled into one model that maps (N, 3, H, W) images to (N, C, H, W) logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.backbone import Backbone


class SegmentationModel(nn.Module):
    """backbone -> dict of features -> head -> logits resized to the input (no softmax).

    `input_multiple` pads the input on the right and bottom to a multiple of it (FCN needs exact 2x steps) and
    crops the logits back, so any H, W works. `freeze_backbone` stops gradients into the backbone and keeps its
    norm layers in eval mode, whatever `train()` is called with.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        *,
        input_multiple: int = 1,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.input_multiple = input_multiple
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pad_bottom = -height % self.input_multiple
        pad_right = -width % self.input_multiple
        if pad_bottom or pad_right:
            images = F.pad(images, (0, pad_right, 0, pad_bottom))
        logits = self.head(self.backbone(images))
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]
