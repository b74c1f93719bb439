"""Batch-norm folding for inference: each BatchNorm that directly follows a convolution becomes that
convolution's scale and bias, which removes one pass over every feature map."""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv_norm_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(parent, conv name, norm name) for each `Conv2d` child registered right before a `BatchNorm2d` child of
    the same width: the layout of every block in seglab's models (ConvNormAct, SeparableConv2d, ResNet's
    bottlenecks and downsamples). A backbone whose forward pass runs its children in another order must not
    register them this way: tests/test_fold.py checks every registered model, folded against unfolded."""
    pairs = []
    for parent in model.modules():
        children = list(parent.named_children())
        for (conv_name, conv), (norm_name, norm) in itertools.pairwise(children):
            if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d and norm.track_running_stats \
                    and conv.out_channels == norm.num_features:
                pairs.append((parent, conv_name, norm_name))
    return pairs


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> nn.Module:
    """`model` (in eval mode) with its conv -> BatchNorm pairs folded, in place."""
    if model.training:
        raise ValueError("fold_batch_norms needs a model in eval mode: folding freezes the running statistics")
    for parent, conv_name, norm_name in conv_norm_pairs(model):
        setattr(parent, conv_name, fuse_conv_bn_eval(getattr(parent, conv_name), getattr(parent, norm_name)))
        setattr(parent, norm_name, nn.Identity())
    return model
