"""Scores (pure arithmetic), the evaluate loop over (predictor, dataset), the writers, the figures and the HTML
report; training's validation metric (torchmetrics) is in `seglab.evaluation.metrics`.

Names are imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.lazy import lazy_exports

# Editors and type checkers read the names here; at run time `__getattr__` imports each one on first use.
if TYPE_CHECKING:
    from seglab.evaluation.checkpoint import evaluate_checkpoint as evaluate_checkpoint
    from seglab.evaluation.loop import evaluate as evaluate
    from seglab.evaluation.scores import Evaluation as Evaluation
    from seglab.evaluation.scores import confusion_from_labels as confusion_from_labels
    from seglab.evaluation.scores import scores_from_confusion as scores_from_confusion

_EXPORTS = {
    "evaluate": "loop", "evaluate_checkpoint": "checkpoint",
    "Evaluation": "scores", "confusion_from_labels": "scores", "scores_from_confusion": "scores",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
