"""Segmentation models: backbones publishing named features, heads reading them, and the registry."""

from seglab.models.backbone import Backbone, FeatureInfo
from seglab.models.registry import build_model, list_models, model_options
from seglab.models.segmenter import SegmentationModel
from seglab.models.summary import ModelSummary, count_parameters, describe_models, forward_gflops

__all__ = [
    "Backbone",
    "FeatureInfo",
    "ModelSummary",
    "SegmentationModel",
    "build_model",
    "count_parameters",
    "describe_models",
    "forward_gflops",
    "list_models",
    "model_options",
]
