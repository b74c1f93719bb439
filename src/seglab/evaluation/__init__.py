"""Scores (pure arithmetic), the evaluate loop over (predictor, dataset), the writers, the figures and the HTML
report; training's validation metric (torchmetrics) is in `seglab.evaluation.metrics`.

Names are imported on first use."""

from __future__ import annotations

from seglab.lazy import lazy_exports

_EXPORTS = {
    "evaluate": "loop", "evaluate_checkpoint": "checkpoint",
    "Evaluation": "scores", "confusion_from_labels": "scores", "scores_from_confusion": "scores",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
