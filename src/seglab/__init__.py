"""seglab: semantic segmentation on PyTorch (FCN-VGG16, DeepLabV3+ with aligned Xception or ResNet-50).

`seglab.load(checkpoint)` returns a `Predictor` (see `seglab.inference`); training lives in `seglab.training`.
"""

from __future__ import annotations

from typing import Any

from seglab.version import __version__

__all__ = ["__version__", "load"]


def load(path: Any, **options: Any) -> Any:
    """`seglab.inference.load`: a `Predictor` from a checkpoint file, a run folder or an `.onnx` export (run by
    ONNX Runtime; `engine="pytorch"|"onnxruntime"` overrides the choice by suffix)."""
    from seglab.inference import load as load_predictor

    return load_predictor(path, **options)
