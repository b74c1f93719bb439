"""Using a trained model: `load` a checkpoint into a `Predictor`, predict on images of any size.

    import seglab
    predictor = seglab.load("runs/demo/checkpoints/best.ckpt")
    mask = predictor.predict("photo.jpg")            # (H, W) int64 class indices
    probabilities = predictor.predict_proba(image)   # (C, H, W) float32

The `InferenceSpec` in every checkpoint says how the model sees an image; `predict_logits` applies it and is
what training's validation calls too. This package never imports Lightning, torchmetrics or kornia, and
imports onnx/onnxruntime only to export (`export_onnx`) or to load an `.onnx` file.
"""

from seglab.inference.loading import load, read_checkpoint, spec_from_checkpoint
from seglab.inference.onnx_engine import export_onnx
from seglab.inference.predictor import Predictor, predict_logits, prepare_inputs, tiled_logits
from seglab.inference.spec import InferenceSpec, default_palette, spec_from_config

__all__ = [
    "InferenceSpec",
    "Predictor",
    "default_palette",
    "export_onnx",
    "load",
    "predict_logits",
    "prepare_inputs",
    "read_checkpoint",
    "spec_from_checkpoint",
    "spec_from_config",
    "tiled_logits",
]
