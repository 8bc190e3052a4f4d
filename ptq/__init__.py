"""ptq: post-training INT8 quantization workbench for ONNX vision models on TensorRT.

The Python API mirrors the CLI: `calibrate` -> `quantize` -> `sensitivity` -> report.
"""
from __future__ import annotations

from ptq.cache import CalibrationCache, read_cache, write_cache
from ptq.calibrate import CalibrateConfig, PreprocessOptions, calibrate, write_outputs
from ptq.calibrators import AlgorithmSettings, Method
from ptq.errors import PtqError
from ptq.table import CalibrationTable, TensorRange
from ptq.version import __version__

__all__ = [
    "AlgorithmSettings", "CalibrateConfig", "CalibrationCache", "CalibrationTable", "Method",
    "PreprocessOptions", "PtqError", "TensorRange", "__version__", "calibrate", "read_cache",
    "write_cache", "write_outputs",
]
