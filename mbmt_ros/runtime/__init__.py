"""Inference runtime: model bundles and backends (TensorRT, ONNX Runtime, PyTorch)."""
