"""Using a trained model: `load` a checkpoint into a `Predictor`, predict on images of any size.

    import seglab
    predictor = seglab.load("runs/demo/checkpoints/best.ckpt")
    mask = predictor.predict("photo.jpg")            # (H, W) int64 class indices
    probabilities = predictor.predict_proba(image)   # (C, H, W) float32

The `InferenceSpec` in every checkpoint says how the model sees an image; `predict_logits` applies it and is
what training's validation calls too. This package never imports Lightning, torchmetrics or kornia, and
imports onnxruntime only to load an `.onnx` file. Names are imported on first use, so that the torch-free
`seglab.inference.options` loads without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.lazy import lazy_exports

# Editors and type checkers read the names here; at run time `__getattr__` imports each one on first use.
if TYPE_CHECKING:
    from seglab.inference.loading import load as load
    from seglab.inference.loading import read_checkpoint as read_checkpoint
    from seglab.inference.loading import spec_from_checkpoint as spec_from_checkpoint
    from seglab.inference.predictor import Predictor as Predictor
    from seglab.inference.predictor import predict_logits as predict_logits
    from seglab.inference.predictor import prepare_inputs as prepare_inputs
    from seglab.inference.predictor import tiled_logits as tiled_logits
    from seglab.inference.spec import InferenceSpec as InferenceSpec

_EXPORTS = {
    "InferenceSpec": "spec",
    "Predictor": "predictor", "predict_logits": "predictor", "prepare_inputs": "predictor", "tiled_logits": "predictor",
    "load": "loading", "read_checkpoint": "loading", "spec_from_checkpoint": "loading",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
