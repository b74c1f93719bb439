"""Segmentation models: backbones publishing named features, heads reading them, and the registry."""

from seglab.models.backbone import OUTPUT_STRIDES, Backbone, BackboneEntry, BackboneWeights, FeatureInfo
from seglab.models.registry import build_model, list_models, model_options, register_backbone
from seglab.models.segmenter import SegmentationModel
from seglab.models.summary import ModelSummary, count_parameters, describe_models, forward_gflops

__all__ = [
    "OUTPUT_STRIDES",
    "Backbone",
    "BackboneEntry",
    "BackboneWeights",
    "FeatureInfo",
    "ModelSummary",
    "SegmentationModel",
    "build_model",
    "count_parameters",
    "describe_models",
    "forward_gflops",
    "list_models",
    "model_options",
    "register_backbone",
]
