"""Metrics (torchmetrics confusion matrix), evaluation reports, output files and PNG figures.

The names below are imported on first use, so `seglab.evaluation.outputs` and `seglab.evaluation.plots` load
without torchmetrics or Lightning (an inference-only install uses them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seglab.evaluation.metrics import SegmentationMetrics, scores_from_confusion
    from seglab.evaluation.reports import Evaluation, evaluate, format_scores

__all__ = ["Evaluation", "SegmentationMetrics", "evaluate", "format_scores", "scores_from_confusion"]

_LAZY_MODULES = {
    "Evaluation": "seglab.evaluation.reports",
    "SegmentationMetrics": "seglab.evaluation.metrics",
    "evaluate": "seglab.evaluation.reports",
    "format_scores": "seglab.evaluation.reports",
    "scores_from_confusion": "seglab.evaluation.metrics",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY_MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_MODULES[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
