"""Scores (pure arithmetic), the evaluate loop over (predictor, dataset), the writers, the figures and the HTML
report; training's validation metric (torchmetrics) is in `seglab.evaluation.metrics`."""
