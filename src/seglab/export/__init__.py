"""Deployable files from trained checkpoints: ONNX export (`onnx`) and its statically quantised INT8 form
(`int8`).

Names are imported on first use, so that the torch-free `seglab.export.options` loads without torch."""

from __future__ import annotations

from seglab.lazy import lazy_exports

_EXPORTS = {
    "ExportReport": "onnx", "export_onnx": "onnx",
    "Int8Report": "int8", "QuantizationSettings": "int8", "export_int8": "int8",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
