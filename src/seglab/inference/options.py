"""The choices prediction takes, as plain values: the command line offers exactly these without loading torch."""

from __future__ import annotations

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
ENGINES = ("pytorch", "onnxruntime")
TTA_MODES = ("flip",)  # besides None: no test-time augmentation
ONNX_SUFFIX = ".onnx"
