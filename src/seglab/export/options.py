"""The choices `seglab export --int8` takes, as plain values: the command line offers them without loading
torch."""

from __future__ import annotations

# ONNX Runtime's names for the calibration methods offered.
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# Operators left in float: "none", or "ends" (the first convolution, which sees the raw image, and the classifier:
# the last convolution and what follows it, the logits' resize).
KEEP_FLOAT = ("none", "ends")
# Chosen on the shapes validation split (benchmarks/results/int8_accuracy.md):
# every per-channel choice agreed with the float model on 99.45-99.75 % of the pixels, well above the check's
# 98 %; per-tensor weights on 91 %. Percentile agreed best, but ONNX Runtime's Entropy and Percentile
# calibrators keep every activation tensor of every calibration image in memory before building their
# histograms (memory grows with image size times count), where MinMax folds its ranges as it goes
# (`ranges_every`).
# So MinMax by default, Percentile on request. Keeping the ends in float gained at most 0.2 points of agreement.
DEFAULT_METHOD = "minmax"
DEFAULT_KEEP_FLOAT = "none"
# Calibration time grows with the images: see benchmarks/results/int8.md for Xception-65 at 512 px.
DEFAULT_CALIBRATION_IMAGES = 16
DEFAULT_MIN_AGREEMENT = 0.98
