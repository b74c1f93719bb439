"""seglab: semantic segmentation on PyTorch (FCN-VGG16, DeepLabV3+ with aligned Xception or ResNet-50).

`seglab.load(checkpoint)` returns a `Predictor` (see `seglab.inference`); training lives in `seglab.training`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seglab.version import __version__

if TYPE_CHECKING:  # imported when `load` runs: `import seglab` stays free of torch
    from pathlib import Path

    from seglab.inference.predictor import Predictor

__all__ = ["__version__", "load"]


def load(path: str | Path, **options: Any) -> Predictor:
    """`seglab.inference.load`: a `Predictor` from a checkpoint file, a run folder or an `.onnx` export (run by
    ONNX Runtime, an `OnnxRuntimePredictor`; `engine="pytorch"|"onnxruntime"` overrides the choice by suffix)."""
    from seglab.inference import load as load_predictor

    return load_predictor(path, **options)
