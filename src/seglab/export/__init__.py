"""Deployable files from a trained checkpoint: the statically quantised INT8 ONNX export (`int8`)."""
