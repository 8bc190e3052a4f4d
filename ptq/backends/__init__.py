"""Inference backends behind one small protocol (`Runner`).

ONNX Runtime is the default and always present. TensorRT is imported only inside
`ptq.backends.trt`, and only when asked for.
"""
from __future__ import annotations

from ptq.backends.base import Runner
from ptq.backends.ort import OrtRunner, resolve_providers

__all__ = ["OrtRunner", "Runner", "resolve_providers"]
