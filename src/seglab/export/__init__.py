"""Deployable files from trained checkpoints: ONNX export (`export_onnx`)."""
