"""Deployable files from trained checkpoints: ONNX export (`onnx`) and its statically quantised INT8 form
(`int8`).

Names are imported on first use, so that the torch-free `seglab.export.options` loads without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.lazy import lazy_exports

# Editors and type checkers read the names here; at run time `__getattr__` imports each one on first use.
if TYPE_CHECKING:
    from seglab.export.int8 import Int8Report as Int8Report
    from seglab.export.int8 import QuantizationSettings as QuantizationSettings
    from seglab.export.int8 import export_int8 as export_int8
    from seglab.export.onnx import ExportReport as ExportReport
    from seglab.export.onnx import export_onnx as export_onnx

_EXPORTS = {
    "ExportReport": "onnx", "export_onnx": "onnx",
    "Int8Report": "int8", "QuantizationSettings": "int8", "export_int8": "int8",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
