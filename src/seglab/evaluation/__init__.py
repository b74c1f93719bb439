"""Metrics (torchmetrics confusion matrix), evaluation reports and PNG figures."""

from seglab.evaluation.metrics import SegmentationMetrics, scores_from_confusion
from seglab.evaluation.reports import Evaluation, evaluate, format_scores

__all__ = ["Evaluation", "SegmentationMetrics", "evaluate", "format_scores", "scores_from_confusion"]
