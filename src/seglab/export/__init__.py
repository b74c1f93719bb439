"""Deployable files from trained checkpoints: ONNX export (`onnx`) and its statically quantised INT8 form
(`int8`)."""
