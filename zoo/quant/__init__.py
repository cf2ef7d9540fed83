"""Reduced-precision support shared by the runtimes: the calibration set (calibration_set.py) and each
runtime's quantization tool wrapped in small reusable steps (ort.py: ONNX Runtime's static QDQ
quantization), so that the runtimes and the per-layer diagnosis build on the same code."""
